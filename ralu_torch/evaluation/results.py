"""What ``ralu eval`` writes into ``--out-dir`` besides the images, and what a run does with a
folder that holds earlier results: as ``ralu generate`` does with a folder of earlier images.

A run records what it wrote in ``DIR/eval.json``: its recipe (everything that decides the
results: model, configurations, prompts, seeds, sizes, metrics, ...) and a SHA-256 digest of
every file it wrote. A later run into the same folder

- **resumes** when the recipe is the same and every file the record lists is as it was
  written: what can be reused is (images with the same recipe, ``timing.json``; the analytic
  backend's tables, which the recipe fixes, bit for bit), and the files are written again;
- **refuses**, in one line and before anything runs, when the folder holds the results of
  another recipe, a file of its names that the record does not list (a hand-written
  ``eval.md``, the results of a run before records were kept) or one that changed since it
  was written, or a damaged ``timing.json`` or record;
- replaces them with ``--overwrite`` (images whose recipe is the same are still reused).

A file a run did not write is never replaced without ``--overwrite``. Nothing is created
before the run is accepted (:meth:`Folder.writing`): files are written under temporary names
and renamed into place together, and a run that fails removes its temporary files and the
directories it made and left empty, nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from pathlib import Path

from ralu_schedule._errors import UsageError, brief

RECORD = "eval.json"
TIMING = "timing.json"
FORMAT = 1


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json(path: Path):
    """``(value, None)`` or ``(None, why it cannot be read)``."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except IsADirectoryError:
        return None, "a directory"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as err:
        return None, f"not valid JSON: {err.msg}, line {err.lineno} column {err.colno}"
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"


def read_timing(path: Path, configurations=None):
    """``(timing, None)`` for a ``timing.json`` as :func:`ralu_torch.evaluation.run._timing`
    writes it (``{"key": {...}, "seconds": {configuration: [seconds, ...]}}``, every time finite
    and positive, and every configuration of ``configurations`` timed), else ``(None, why)``."""
    data, why = _json(path)
    if why is not None:
        return None, why
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict) or not isinstance(data.get("seconds"), dict):
        return None, "not a timing file: it needs a \"key\" and \"seconds\""
    for name, times in data["seconds"].items():
        if not isinstance(times, list) or not times or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0 for t in times):
            return None, f"the seconds of {brief(name)} are not a list of positive numbers"
    missing = [c for c in configurations or [] if c not in data["seconds"]]
    if missing:
        return None, f"{brief(missing[0])} has no seconds"
    return data, None


def _read_record(path: Path):
    data, why = _json(path)
    if why is not None:
        return None, why
    if not (isinstance(data, dict) and data.get("ralu_eval") == FORMAT and isinstance(data.get("recipe"), dict)
            and isinstance(data.get("files"), dict) and all(isinstance(v, str) for v in data["files"].values())):
        return None, "not a record written by this ralu eval"
    return data, None


class Folder:
    """``--out-dir`` of one ``ralu eval`` run: checked when made (no side effects; a conflict is
    one :class:`UsageError`), written only inside :meth:`writing`. ``names``: the files this
    kind of run may write there (the record aside); ``recipe``: a JSON-able dict."""

    def __init__(self, out: Path, recipe: dict, names, overwrite: bool):
        self.out, self.names, self.overwrite = Path(out), tuple(names), overwrite
        self.recipe = json.loads(json.dumps(recipe))              # as it reads back from the record
        self.files = {}          # name -> digest of the files of this recipe on disk (the record's list)
        self.earlier = {}        # name -> digest of files an earlier ralu eval wrote here (any recipe)
        self.resumed = False     # the folder holds this recipe's results, all as they were written
        self._staged, self._made, self._committed = {}, [], set()
        self._check()

    def _check(self) -> None:
        for name in (*self.names, RECORD):
            if (self.out / name).is_dir():          # not even --overwrite replaces a directory
                raise UsageError(f"{brief(str(self.out / name))} is a directory, where ralu eval writes its {name}; "
                                 "move it, or write elsewhere")
        present = [n for n in self.names if (self.out / n).exists()]
        if not present:
            return
        record, why = _read_record(self.out / RECORD) if (self.out / RECORD).exists() else (None, None)
        if record is not None:
            self.earlier = {n: d for n, d in record["files"].items() if n in present and digest(self.out / n) == d}
        same = record is not None and record["recipe"] == self.recipe
        if self.overwrite:
            self.files = dict(self.earlier) if same else {}
            return
        if TIMING in present:       # of this recipe, it must time its configurations
            _, bad = read_timing(self.out / TIMING, self.recipe.get("configurations") if same else None)
            if bad is not None:
                raise UsageError(f"{brief(str(self.out / TIMING))} is damaged ({bad}); delete it to time again, or "
                                 "pass --overwrite")
        if why is not None:
            raise UsageError(f"{brief(str(self.out / RECORD))} is damaged ({why}); pass --overwrite to replace the "
                             f"results in {brief(str(self.out))}, or write elsewhere")
        if record is None:
            raise UsageError(f"{brief(str(self.out / present[0]))} exists and was not written by ralu eval (there is no "
                             f"{RECORD} beside it); pass --overwrite to replace it, or write elsewhere")
        if not same:
            keys = sorted(set(self.recipe) | set(record["recipe"]))
            diff = [k for k in keys if self.recipe.get(k) != record["recipe"].get(k)]
            raise UsageError(f"{brief(str(self.out))} holds the results of another ralu eval (it differs in "
                             f"{', '.join(diff)}); pass --overwrite to replace them, or write elsewhere")
        changed = [n for n in present if n not in self.earlier]
        if changed:
            raise UsageError(f"{brief(str(self.out / changed[0]))} is not as ralu eval wrote it (edited since, or not "
                             f"written by it: {RECORD} records another file); pass --overwrite to replace it, or write "
                             "elsewhere")
        self.files = dict(self.earlier)
        self.resumed = set(record["files"]) == set(self.earlier)      # nothing it lists is missing

    @contextlib.contextmanager
    def writing(self, *subdirs):
        """The folder (and ``subdirs`` in it) made where missing; on failure the files staged
        and not committed are removed, and so are the directories made here if left empty."""
        try:
            for d in (self.out, *(self.out / s for s in subdirs)):
                if not d.exists():
                    d.mkdir()
                    self._made.append(d)
            yield self
        except BaseException:
            for tmp in self._staged.values():
                tmp.unlink(missing_ok=True)
            self._staged.clear()
            for d in reversed(self._made):
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
            raise

    def stage(self, name: str) -> Path:
        """Where to write ``name`` now: a temporary file beside it, renamed by :meth:`commit`."""
        tmp = self.out / f".{name}.{os.getpid()}.tmp"
        self._staged[name] = tmp
        return tmp

    def commit(self) -> list[Path]:
        """Every staged file renamed into place and recorded; returns their paths."""
        done = []
        for name, tmp in list(self._staged.items()):
            if not tmp.exists():                     # staged, then not written (no plot without matplotlib)
                del self._staged[name]
                continue
            os.replace(tmp, self.out / name)
            del self._staged[name]
            self.files[name] = digest(self.out / name)
            self._committed.add(name)
            done.append(self.out / name)
        self._write_record()
        return done

    def finish(self, keep=()) -> None:
        """After the last commit: files an earlier ralu eval wrote here that this run neither
        wrote again nor reused (``keep``) are removed (a contact sheet now turned off): they
        would describe other results."""
        for name, written in self.earlier.items():
            if name in self._committed:
                continue
            if name in keep:
                self.files[name] = written                  # reused: this run's result now, recorded as such
            else:
                (self.out / name).unlink(missing_ok=True)
                self.files.pop(name, None)
        self._write_record()

    def _write_record(self) -> None:
        data = {"ralu_eval": FORMAT, "recipe": self.recipe, "files": dict(sorted(self.files.items()))}
        tmp = self.out / f".{RECORD}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / RECORD)
