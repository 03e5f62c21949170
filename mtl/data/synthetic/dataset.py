"""Writing a synthetic dataset in the MiniScapes layout, and building it once (atomically, under a lock)
in the cache folder keyed by its parameters."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
from filelock import FileLock, Timeout

from mtl.data.miniscapes import (
    CLASS_NAMES,
    NUM_CLASSES,
    DatasetError,
    sample_path,
    write_depth,
    write_rgb,
    write_semseg,
)
from mtl.data.synthetic.params import GENERATOR_VERSION, SyntheticParams
from mtl.data.synthetic.render import render_scene
from mtl.run.io import atomic_write_bytes
from mtl.run.layout import default_cache_dir as cache_dir
from mtl.run.stopping import STOP_SIGNALS, StopSignals, describe_signal

logger = logging.getLogger(__name__)

MANIFEST_NAME = "synthetic.json"
LOCK_SUFFIX = ".build-lock"
TMP_MARK = ".tmp-"


class BuildStopped(DatasetError):
    """A stop signal arrived while a synthetic dataset was being built; the half-built folder is removed."""

    def __init__(self, signum: int, root: Path):
        self.signum, self.root = signum, root
        super().__init__(f"stopped by {describe_signal(signum)} while building the synthetic dataset {root}; "
                         "the half-built dataset was removed (it is built again when next needed)")


def generate(root: Union[str, Path], params: SyntheticParams, progress: bool = False) -> dict[str, Any]:
    """Write the dataset (train/val/test with rgb, semseg and depth), ``statistics.json`` and a manifest into
    ``root`` (which must be empty or absent). Fails if some class is absent from some split."""
    from mtl.data.statistics import write_statistics

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"synthetic dataset target {root} is not empty")
    started = time.perf_counter()
    class_pixels: dict[str, list[int]] = {}
    for split, count in params.split_sizes().items():
        for modality in ("rgb", "semseg", "depth"):
            (root / split / modality).mkdir(parents=True, exist_ok=True)
        totals = np.zeros(256, np.int64)
        for index in range(count):
            rgb, ids, depth = render_scene(params.seed, split, index, params.height, params.width, count)
            write_rgb(sample_path(root, split, "rgb", index), rgb)
            write_semseg(sample_path(root, split, "semseg", index), ids)
            write_depth(sample_path(root, split, "depth", index), depth, valid=depth > 0)
            totals += np.bincount(ids.ravel(), minlength=256)
            if progress and (index + 1) % 50 == 0:
                print(f"  {split}: {index + 1}/{count}", file=sys.stderr)
        absent = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if totals[c] == 0]
        if absent:
            raise RuntimeError(
                f"synthetic {split} split lacks classes {absent}; every split must show all {NUM_CLASSES}"
            )
        class_pixels[split] = totals[:NUM_CLASSES].tolist()
    statistics = write_statistics(root)
    manifest = {
        "generator": "mtl.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "params": params.to_dict(),
        "class_names": list(CLASS_NAMES),
        "class_pixels": class_pixels,
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_bytes(root / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    return {"manifest": manifest, "statistics": statistics}


def read_manifest(root: Union[str, Path]) -> Optional[dict[str, Any]]:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"synthetic manifest {path} cannot be read: {exc}") from None


def _is_complete(root: Path, params: SyntheticParams) -> bool:
    manifest = read_manifest(root)
    if manifest is None:
        return False
    built = (manifest.get("params"), manifest.get("generator_version"))
    if built != (params.to_dict(), GENERATOR_VERSION):
        raise DatasetError(
            f"synthetic dataset {root} was built with params {built[0]} (generator version {built[1]}), "
            f"but {params.to_dict()} (version {GENERATOR_VERSION}) were asked for; use another folder or delete it"
        )
    return True


def build_synthetic(root: Union[str, Path], params: SyntheticParams, progress: bool = False) -> Path:
    """Build the dataset at ``root`` unless it is already there. The build goes to a temporary folder beside
    it that is renamed into place, under a file lock, so a killed build never leaves half a dataset and two
    processes building at once do the work once."""
    root = Path(root).expanduser().absolute()
    # A complete dataset is used as it is, without the lock: its manifest is written last and the folder
    # renamed into place whole, and a shared cache may be read-only, where no lock file can be created.
    if _is_complete(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(_lock_path(root))):
        if _is_complete(root, params):
            return root
        if root.exists():
            if not root.is_dir() or any(root.iterdir()):
                raise DatasetError(
                    f"{root} exists and is not a synthetic dataset (no {MANIFEST_NAME}); "
                    "expected an empty or missing folder"
                )
            root.rmdir()
        _remove_killed_builds(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}{TMP_MARK}", dir=root.parent))
        try:
            with _stop_signals_end_the_build(root):
                result = generate(tmp, params, progress=progress)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("built synthetic dataset %s in %.1f s", root, result["manifest"]["seconds"])
        return root


def _lock_path(root: Path) -> Path:
    return root.parent / f".{root.name}{LOCK_SUFFIX}"


def _remove_killed_builds(root: Path) -> None:
    """Remove the temporary folders that killed builds (SIGKILL, a lost node) left beside ``root``: its own
    (the caller holds its lock, and only lock holders create them) and those of other cached synthetic
    datasets whose lock nobody holds."""
    for stale in root.parent.glob(f".*{TMP_MARK}*"):
        name = stale.name[1:].rpartition(TMP_MARK)[0]
        if name == root.name:
            shutil.rmtree(stale, ignore_errors=True)
        elif name.startswith("synthetic-") and _lock_path(root.parent / name).is_file():
            try:
                with FileLock(str(_lock_path(root.parent / name)), timeout=0):
                    shutil.rmtree(stale, ignore_errors=True)
            except Timeout:
                pass  # a build under way


def _remembered_stop(handlers: Any) -> Optional[int]:
    """The stop signal a StopSignals among ``handlers`` (mtl-train's) has already received, or None."""
    for handler in handlers:
        holder = getattr(handler, "__self__", None)
        if isinstance(holder, StopSignals) and holder.last is not None:
            return holder.last
    return None


@contextmanager
def _stop_signals_end_the_build(root: Path) -> Iterator[None]:
    """Within the block a stop signal (SIGTERM, SIGINT, ...) raises BuildStopped at once, after the handler the
    process had sees it (mtl-train remembers it and ends the run interrupted): drawing thousands of images
    must not delay a stop by minutes; one that mtl-train received before the build stops it before it
    starts. Only the first signal raises, so the caller's clean-up runs whole.
    Signals the process ignores stay ignored; off the main thread (no handlers there) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    earlier = _remembered_stop(previous.values())
    if earlier is not None:  # arrived while the run was being set up: do not start drawing
        raise BuildStopped(earlier, root)
    raised: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        handler = previous[signum]
        if callable(handler) and handler is not signal.default_int_handler:  # KeyboardInterrupt: this is it
            handler(signum, frame)
        if not raised:
            raised.append(signum)
            raise BuildStopped(signum, root)

    chosen = [signum for signum, handler in previous.items() if handler is not signal.SIG_IGN]
    for signum in chosen:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum in chosen:
            signal.signal(signum, previous[signum] if previous[signum] is not None else signal.SIG_DFL)


def default_root(params: SyntheticParams) -> Path:
    return cache_dir() / f"synthetic-{params.short_hash()}"


def ensure_synthetic(cfg: Any) -> Path:
    """The synthetic dataset for ``cfg``: at ``cfg.dataset_root`` if set, else in the cache folder keyed by
    its parameters; built on first use."""
    params = SyntheticParams.from_config(cfg)
    root = Path(cfg.dataset_root) if cfg.dataset_root else default_root(params)
    return build_synthetic(root, params)
