"""Install the RALU nodes into a ComfyUI, from a clone of the ralu repository, in one command.

Run it with the Python that runs ComfyUI (its venv's, or the portable build's
``python_embeded/python.exe``)::

    git clone <the ralu repository> ralu
    /path/to/ComfyUI/venv/bin/python ralu/comfyui_ralu/install.py /path/to/ComfyUI

It installs the ralu library from the clone, with its torch extra, into that Python
(``python -m pip install "<clone>[torch]"``; ralu is on no package index, so neither ComfyUI's
registry nor ComfyUI-Manager can fetch it), then copies this folder to
``ComfyUI/custom_nodes/comfyui_ralu``: library and nodes come from the same clone. Run it again
after updating the clone. Arguments after ``--`` go to pip (``-- --no-deps``, ``-- --target DIR``).
Needs nothing but the standard library; exits non-zero with one line when something is wrong.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
NAME = "comfyui_ralu"
#: What is copied: the package, its example workflows and metadata; no caches.
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pip_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="install.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("comfyui", help="the ComfyUI folder (the one that holds main.py and custom_nodes)")
    args = parser.parse_args(argv)
    try:
        install(Path(args.comfyui), pip_args)
    except (ValueError, OSError, subprocess.CalledProcessError) as err:
        print(f"install.py: {err}", file=sys.stderr)
        return 1
    return 0


def install(comfyui: Path, pip_args: list) -> Path:
    """Install the library into this Python and copy the nodes into ``comfyui``; returns the
    nodes' folder there."""
    if not (comfyui / "main.py").is_file() or not (comfyui / "comfy").is_dir():
        raise ValueError(f"{comfyui} is not a ComfyUI folder (no main.py and comfy/ in it)")
    if not (REPOSITORY / "pyproject.toml").is_file() or not (REPOSITORY / "ralu_torch").is_dir():
        raise ValueError(f"{HERE} is not inside a clone of the ralu repository (no pyproject.toml and ralu_torch/ "
                         "beside it); run install.py from the clone")
    target = comfyui / "custom_nodes" / NAME
    if target.is_symlink() or (target.exists() and not (target / "__init__.py").is_file()):
        raise ValueError(f"{target} exists and is not a copy of the RALU nodes; remove it first")
    print(f"installing ralu from {REPOSITORY} into {sys.executable}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", f"{REPOSITORY}[torch]", *pip_args], check=True)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(HERE, target, ignore=IGNORE)
    print(f"copied the nodes to {target}; restart ComfyUI: they are under sampling/ralu")
    return target


if __name__ == "__main__":
    sys.exit(main())
