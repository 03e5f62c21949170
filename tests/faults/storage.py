"""Storage faults inside a training process: a disk that fills up at a chosen write, or a file size limit.

``fail_write(name, occurrence)`` runs in a forked ``mtl-train`` before it starts (see
``faults.launcher.start_train(setup=...)``). From then on the ``occurrence``-th file named ``name`` that
the run opens for writing -- through ``mtl.run.io`` (checkpoints, status, config, source.zip, submission.zip,
the metrics trace) -- takes half of its first write and then fails it with ``OSError(ENOSPC)``, as
write(2) on a full disk does. Nothing in ``mtl.run.io`` is replaced: its own code runs and must clean up.

``limit_file_size(n)`` is the kernel's version (RLIMIT_FSIZE): every write past ``n`` bytes of a file
fails with EFBIG, whoever writes it.
"""

from __future__ import annotations

import errno
import functools
import os
import resource
import signal
from pathlib import Path
from typing import Any, Callable


class _FullDiskFile:
    """A file handle whose first write (of data holding ``marker``, when given) stops half-way with ENOSPC."""

    def __init__(self, handle: Any, marker: bytes | None = None, on_fail: Callable[[], None] | None = None):
        self._handle = handle
        self._failed = False
        self._marker = marker
        self._on_fail = on_fail

    def write(self, data):
        wanted = self._marker is None or self._marker in (data if isinstance(data, bytes) else data.encode())
        if not self._failed and wanted:
            self._failed = True
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            if self._on_fail is not None:
                self._on_fail()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self._handle.__exit__(*exc_info)

    def __getattr__(self, name):
        return getattr(self._handle, name)


class _OsWithFullDisk:
    """``os`` for mtl.run.io, except that ``fdopen`` of the chosen temporary file returns a full-disk handle."""

    def __init__(self, real_os: Any, is_target: Callable[[str], bool]):
        self._os, self._is_target = real_os, is_target

    def fdopen(self, fd: int, *args: Any, **kwargs: Any):
        handle = self._os.fdopen(fd, *args, **kwargs)
        name = Path(self._os.readlink(f"/proc/self/fd/{fd}")).name
        return _FullDiskFile(handle) if self._is_target(name) else handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._os, name)


def _install_full_disk(target: str, occurrence: int) -> None:
    import builtins

    import mtl.run.io

    seen = [0]

    def is_target(file_name: str) -> bool:
        # atomic_open writes ".<target>.<random>.tmp"; append_line opens <target> itself.
        if file_name == target or (file_name.startswith(f".{target}.") and file_name.endswith(".tmp")):
            seen[0] += 1
            return seen[0] == occurrence
        return False

    mtl.run.io.os = _OsWithFullDisk(os, is_target)

    def open_for_append(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (the caller closes it, as with open)
        return _FullDiskFile(handle) if "a" in mode and is_target(Path(path).name) else handle

    mtl.run.io.open = open_for_append  # module global: shadows the builtin for append_line only


def _install_full_disk_for(target: str, marker: bytes) -> None:
    import mtl.run.io

    failed = [False]

    class _OsFailingOnce(_OsWithFullDisk):
        def fdopen(self, fd: int, *args: Any, **kwargs: Any):
            handle = self._os.fdopen(fd, *args, **kwargs)
            name = Path(self._os.readlink(f"/proc/self/fd/{fd}")).name
            if failed[0] or not self._is_target(name):
                return handle
            return _FullDiskFile(handle, marker, on_fail=lambda: failed.__setitem__(0, True))

    mtl.run.io.os = _OsFailingOnce(os, lambda name: name.startswith(f".{target}.") and name.endswith(".tmp"))


def fail_write_holding(target: str, marker: bytes) -> Callable[[], None]:
    """A picklable setup: the first atomic write of a file named ``target`` whose data holds ``marker`` fails
    with ENOSPC (what a write fails on does not depend on how many writes came before it)."""
    return functools.partial(_install_full_disk_for, target, marker)


def fail_write(target: str, occurrence: int) -> Callable[[], None]:
    """A picklable setup: the ``occurrence``-th write of a file named ``target`` fails with ENOSPC."""
    return functools.partial(_install_full_disk, target, occurrence)


def _install_file_size_limit(max_bytes: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write(2) instead of being killed
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))


def limit_file_size(max_bytes: int) -> Callable[[], None]:
    return functools.partial(_install_file_size_limit, max_bytes)
