"""How ``mtl-ablate`` ends when something other than a run fails: bad paths, the machine's own errors (a
full disk, a read-only folder), and bugs.

A path given for a folder that is a file is refused before the command starts, naming the flag. An OSError
the machine raised is one line that says what happened, to which file, and what to do; no traceback. Anything
else is a bug: its traceback is printed, as it must be, and kept in a log file whose path is printed with it.
"""

from __future__ import annotations

import errno
import os
import sys
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Optional, Sequence

from mtl.run.layout import default_cache_dir

from .options import Options

# The flags that name folders (read from, or created): a file there is refused up front.
FOLDER_FLAGS = {"runs_dir": "--runs-dir", "ablations_dir": "--ablations-dir", "out": "--out",
                "dataset_root": "--dataset-root"}

# What to do about each error of the machine (errno -> the advice after what happened).
_ADVICE = {
    errno.ENOSPC: "the disk is full: free space and run the same command again (nothing half-written was kept)",
    errno.EDQUOT: "the disk quota is used up: free space and run the same command again",
    errno.EROFS: "the file system is read-only: point the command at a writable folder",
    errno.EACCES: "permission denied: point the command at a folder you may write to",
    errno.EPERM: "not permitted: point the command at a folder you may write to",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EEXIST: "it already exists (a file where a folder was expected?)",
    errno.EISDIR: "it is a folder, not a file",
    errno.EIO: "the storage reports an input/output error: check the disk",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) and run again",
    errno.ENFILE: "too many open files on the machine: run again later",
}


def folder_problem(path: Path, flag: str) -> Optional[str]:
    """Why ``path`` (given with ``flag``) cannot be a folder: it, or a folder above it, is a file."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if part.is_dir():
                return None
            what = "is a file" if part == path else f"lies below {part}, which is a file"
            return f"{flag} {path} {what}; expected a folder (or a path where one can be made)"
    return None


def path_problems(options: Options) -> list[str]:
    """The folder flags of a subcommand's options whose paths cannot be folders."""
    problems = []
    given = {f.name for f in fields(options)}
    for attribute, flag in FOLDER_FLAGS.items():
        value = getattr(options, attribute) if attribute in given else None
        if isinstance(value, Path):
            problem = folder_problem(value, flag)
            if problem:
                problems.append(problem)
    return problems


def describe_os_error(exc: OSError) -> Optional[str]:
    """One line for an error of the machine (what happened, to which file, what to do); None for an errno
    this does not know, which is left to the bug path."""
    advice = _ADVICE.get(exc.errno or 0)
    if advice is None:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or os.strerror(exc.errno or 0)}{where}: {advice}"


def crash_log(argv: Sequence[str], exc: BaseException) -> Optional[Path]:
    """Write the traceback of a bug, with the command line, to a log file; its path, or None when even that
    cannot be written."""
    folder = default_cache_dir() / "logs"
    path = folder / f"mtl-ablate-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (f"command: mtl-ablate {' '.join(argv)}\npython: {sys.version.split()[0]}\ncwd: {os.getcwd()}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError:
        return None
    return path


def report_bug(argv: Sequence[str], exc: BaseException) -> None:
    """Print a bug's traceback and where it was kept."""
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    path = crash_log(argv, exc)
    kept = f"; the traceback above is kept in {path}" if path else ""
    print(f"mtl-ablate: an unexpected error, a bug of mtl-ablate{kept}; please report it with the command line",
          file=sys.stderr)
