"""A cache of run summaries, so a report over many runs re-reads only the runs that changed.

Reading a run costs parsing its config and every validation line of its metric trace (about 5 ms for
a run of 100 points); a finished run never changes. Each run's summary (its row of the runs table and
its validation points as a float array) is kept in ``<cache>/<hash of the run path>.npz``, next to the
size and modification time of the three record files it came from and a hash of the code that built it. Any
difference (a new point, a new status, edited code) and the run is read again. A cache file that does
not load is read again too and overwritten: the run directory stays the source of truth.

File format (no pickles): one line of JSON (code version, run path, file signature, row, point keys,
array shape), then the float64 array's bytes, little-endian.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mtl.run.layout import RECORD_FILES
from mtl.run.layout import default_cache_dir as cache_root


def default_cache_dir() -> Path:
    return cache_root() / "report-runs"


def code_version(code_files: Iterable[str | Path]) -> str:
    """A hash of the code that builds the summaries (``code_files``, given by their user) and of this module."""
    digest = hashlib.sha256()
    for path in (*code_files, __file__):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def signature(run_dir: Path) -> list[Any]:
    sig: list[Any] = []
    for name in RECORD_FILES:
        try:
            stat = (run_dir / name).stat()
            sig.append([name, stat.st_size, stat.st_mtime_ns])
        except FileNotFoundError:
            sig.append([name, None, None])
    return sig


class SummaryCache:
    """Summaries under ``folder``; ``code_files``: the modules whose code decides what a summary holds."""

    def __init__(self, folder: str | Path, code_files: Iterable[str | Path]):
        self.folder = Path(folder)
        self.version = code_version(code_files)
        self.hits = self.misses = 0

    def _path(self, run_dir: Path) -> Path:
        return self.folder / (hashlib.sha256(str(run_dir).encode()).hexdigest()[:32] + ".summary")

    def load(self, run_dir: Path, sig: list[Any]) -> tuple[dict[str, Any], list[str], np.ndarray] | None:
        """(row, keys, values) cached for ``run_dir`` (an absolute path) with this signature, else None."""
        try:
            data = self._path(run_dir).read_bytes()
            header, _, body = data.partition(b"\n")
            meta = json.loads(header)
            values = np.frombuffer(body, dtype="<f8").reshape(meta["shape"])
        except (OSError, ValueError, KeyError, TypeError):  # absent, or not a summary this code wrote
            self.misses += 1
            return None
        if meta.get("version") != self.version or meta.get("path") != str(run_dir) or meta.get("signature") != sig:
            self.misses += 1
            return None
        self.hits += 1
        return meta["row"], meta["keys"], values

    def save(self, run_dir: Path, sig: list[Any], row: dict[str, Any], keys: list[str], values: np.ndarray) -> None:
        meta = {"version": self.version, "path": str(run_dir), "signature": sig, "row": row, "keys": keys,
                "shape": list(values.shape)}
        data = json.dumps(meta).encode() + b"\n" + np.ascontiguousarray(values, dtype="<f8").tobytes()
        self.folder.mkdir(parents=True, exist_ok=True)
        # Temporary file and rename: a reader sees the old summary or the new one, never half of one.
        fd, tmp = tempfile.mkstemp(prefix=".summary.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self._path(run_dir))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
