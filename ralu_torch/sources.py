"""Where ``ralu generate`` loads weights from, checked before torch is imported.

- :func:`check_model`: ``--model`` is a local pipeline folder (it must exist and hold a
  ``model_index.json``) or a hub id ``owner/name`` that is in the local hub cache, or
  reachable; offline (``HF_HUB_OFFLINE``) or unreachable, an uncached id fails at once with one
  line instead of retrying for half a minute and then blaming the repository.
- :func:`pickle_files`: which of a pipeline's components (or a LoRA) hold only pickle weights
  (``.bin``, ``.pt``, ``.ckpt``), which run code when loaded. Weights that only an image's
  recipe names (``--from``) load from safetensors only; a model the user names on the command
  line may fall back to pickles, and the run says so in one line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ralu_schedule._errors import UsageError, brief

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
WEIGHT_SUFFIXES = PICKLE_SUFFIXES + (".safetensors", ".gguf")
#: how long a hub that answers nothing is waited for before the run is refused
HUB_TIMEOUT = 5.0


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_model(model: str, flag: str = "--model") -> Path | None:
    """The local folder of ``model`` (a folder, or the cached snapshot of a hub id), or None for a
    hub id that is not cached but reachable; one line otherwise (see the module docstring)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {brief(model)} is a file; give a diffusers pipeline folder or a hub id")
        if not (path / "model_index.json").is_file():
            raise UsageError(f"{flag} {brief(model)} is not a diffusers pipeline folder (it has no model_index.json)")
        return path
    if not HUB_ID.fullmatch(model) or model.startswith((".", "/", "~")):
        raise UsageError(f"{flag} {brief(model)}: no such directory (and not a hub id owner/name)")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "model_index.json")
    if isinstance(cached, str):
        return Path(cached).parent
    if offline():
        raise UsageError(f"{flag} {model} is not in the local hub cache and HF_HUB_OFFLINE is set; download it first "
                         f"(hf download {model}) or give a local folder")
    _check_reachable(model, flag)
    return None


def _check_reachable(model: str, flag: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().model_info(model, timeout=HUB_TIMEOUT)
    except GatedRepoError:
        raise UsageError(f"{flag} {model} is a gated repository: accept its terms on the hub and log in "
                         "(hf auth login)") from None
    except RepositoryNotFoundError:
        raise UsageError(f"{flag} {model}: no such model on the hub (or it is private: log in)") from None
    except HfHubHTTPError as err:
        raise UsageError(f"{flag} {model}: the hub answered {str(err).splitlines()[0][:120]}") from None
    except Exception as err:                     # no network, DNS, refused, timed out (the HTTP client's own errors)
        raise UsageError(f"{flag} {model} is not in the local hub cache and the hub cannot be reached "
                         f"({type(err).__name__}); connect, download it first, or give a local folder") from None


def pickle_files(folder: Path) -> list[str]:
    """Components of a pipeline folder (or the folder itself) whose weights are pickle files
    only: a list of ``component/file`` names, empty when every weight has a safetensors copy."""
    folder = Path(folder)
    dirs = [folder] + [d for d in sorted(folder.iterdir()) if d.is_dir()] if folder.is_dir() else []
    out = []
    for d in dirs:
        files = [f for f in d.iterdir() if f.is_file() and f.suffix.lower() in WEIGHT_SUFFIXES]
        if files and not any(f.suffix.lower() in (".safetensors", ".gguf") for f in files):
            out += [f"{d.name}/{f.name}" if d != folder else f.name for f in files]
    return out


def check_recipe_lora(path: str, image: str) -> None:
    """A LoRA that only an image's recipe names: safetensors only (a file, a folder holding one,
    or a hub id, loaded with ``use_safetensors=True``)."""
    p = Path(path).expanduser()
    pickles = ([p.name] if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES
               else pickle_files(p) if p.is_dir() else [])
    if pickles:
        raise UsageError(f"{brief(image)}'s recipe names the LoRA {brief(path)}, a pickle file ({pickles[0]}), which "
                         "can run code when loaded; weights named only by an image load from safetensors only: name "
                         f"it yourself with --lora {brief(path)} to load it")
