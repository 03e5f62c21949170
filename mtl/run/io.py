"""Atomic file writes: a run killed at any instant leaves either the old or the new file, never half of one."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``; fsync and rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        _name_the_file(exc, path)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: object, path: str | Path) -> None:
    import torch  # here, not at the top: the readers of run directories must not load torch

    # Streamed into the temporary file: serialized to memory first, a checkpoint (160 MB for the model and its
    # momentum) was held twice in memory and copied twice, 40% of the time a save takes.
    with atomic_open(path, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as exc:
            # torch's zip writer turns a failed write into "unexpected pos"; the OSError it replaced (disk full,
            # file too large) is what the reader of the error needs.
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise


def append_line(path: str | Path, line: str) -> None:
    """Append one line, without fsync: readers ignore a torn final line, and a caller that needs the lines
    on disk (before a checkpoint that counts on them) calls :func:`fsync_file`."""
    try:
        with open(path, "a") as handle:
            handle.write(line + "\n")
    except OSError as exc:
        _name_the_file(exc, Path(path))
        raise


def fsync_file(path: str | Path) -> None:
    """Make what was written to ``path`` durable (fsync reaches the file's data whichever descriptor wrote
    it); nothing to do when the file does not exist yet."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        _name_the_file(exc, Path(path))
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        _name_the_file(exc, Path(path))
        raise
    finally:
        os.close(fd)


def _name_the_file(exc: BaseException, path: Path) -> None:
    """A failed write(2) or fsync(2) -- a full disk, a quota -- reports no file name; add the one written."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)
