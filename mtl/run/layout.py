"""Where a run's files lie (docs/DESIGN.md §4.1): the one place that spells their names.

A run directory is ``<runs>/<entry>/<variant>-s<seed>-<config hash>/``; beside the run directories of an
entry lie its ``.logs/`` (each run's console output) and ``.profile`` (the profile of its last ``run``).
Everything else reaches a file through :class:`RunDirectory`'s accessors. Nothing here imports torch, so
the suite, the reports and the benchmarks find runs without paying for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from mtl.run.errors import RunLocked, RunRefused
from mtl.run.io import atomic_write_text

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"  # derived from the trace and status (mtl.run.summary) for fast reports
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
PREDICTIONS_DIR = "predictions"
SUBMISSION_FILE = "submission.zip"
# A submission.zip found damaged is moved here (never deleted: it may hold the only good copy of a member)
# before the run rebuilds it from best.pt.
DAMAGED_SUBMISSION_FILE = "submission.damaged.zip"
SOURCE_ZIP_FILE = "source.zip"
WANDB_DIR = "wandb"
LOCK_FILE = ".lock"
SLURM_JOBS_FILE = "slurm-jobs.jsonl"  # one line per SLURM submission of the run: job id, submitit folder
ENVIRONMENT_FILE = "environment.json"  # what each attempt trained with: git state, packages, torch, device
PREDICTION_TASKS = ("semseg", "depth")
# Beside the run directories of an entry (not inside one).
LOGS_DIR = ".logs"
PROFILE_FILE = ".profile"
RACING_FILE = ".racing"  # beside them too: whether the entry's last `run` raced, and with which settings
# The files a run's record is read from; a reader caching a summary watches these.
RECORD_FILES = (CONFIG_FILE, STATUS_FILE, METRICS_FILE)

REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ defaults
def default_runs_dir() -> Path:
    return Path(os.environ.get("MTL_RUNS_DIR") or "runs")


def default_ablations_dir() -> Path:
    return Path(os.environ.get("MTL_ABLATIONS_DIR") or REPO_ROOT / "ablations")


# Where MiniScapes lives on this machine, for every profile that trains on it (``run --dataset-root`` sets it
# for one command). dataset_root is run-invariant: it never changes a run's name or hash.
DATASET_ROOT_ENV = "MTL_DATASET_ROOT"


def dataset_root_override() -> Optional[str]:
    """The MiniScapes folder $MTL_DATASET_ROOT names, or None when it is unset or empty."""
    return os.environ.get(DATASET_ROOT_ENV) or None


def default_cache_dir() -> Path:
    """Root of the dataset and report caches."""
    return Path(os.environ.get("MTL_CACHE_DIR") or Path.home() / ".cache" / "mtl-ablate").expanduser()


# ------------------------------------------------------------------------------------------ run name
# <variant>-s<seed>-<config hash>: the same config always lands in the same place.
RUN_NAME = re.compile(r"^(?P<variant>.+)-s(?P<seed>\d+)-(?P<hash>[0-9a-f]+)$")


@dataclass(frozen=True)
class RunName:
    variant: str
    seed: int
    config_hash: str

    def __str__(self) -> str:
        return f"{self.variant}-s{self.seed}-{self.config_hash}"


# A file name may hold 255 bytes; the run's log is <name>.log and temporary files add a prefix and a
# suffix. A variant name longer than this (a grid over many keys) is cut and a hash of the whole name
# appended, so that distinct variants keep distinct directories.
MAX_VARIANT_BYTES = 120
SHORTENED_MARK = "~"


def short_variant(variant: str) -> str:
    """``variant`` as it appears in a run name: unchanged when short enough, else cut with a hash of it."""
    encoded = variant.encode()
    if len(encoded) <= MAX_VARIANT_BYTES:
        return variant
    digest = hashlib.sha256(encoded).hexdigest()[:10]
    head = encoded[: MAX_VARIANT_BYTES - len(digest) - len(SHORTENED_MARK)].decode(errors="ignore")
    return f"{head}{SHORTENED_MARK}{digest}"


def run_name(variant: str, seed: int, config_hash: str) -> str:
    """``<variant>-s<seed>-<config hash>``, the variant shortened (:func:`short_variant`) when too long. The
    variant must already be one safe path component (the entry reader and the grid expansion make it so):
    this is the second line of defence, never the first."""
    if not variant or "/" in variant or "\0" in variant or variant.startswith("."):
        raise ValueError(f"variant name {variant[:80]!r} cannot be part of a folder name")
    return str(RunName(short_variant(variant), seed, config_hash))


def parse_run_name(name: str) -> Optional[RunName]:
    """The parts of a run directory's name, or None for a name not built by :func:`run_name`.

    The variant is as the name holds it: :func:`short_variant` of the entry's variant name."""
    match = RUN_NAME.match(name)
    return RunName(match["variant"], int(match["seed"]), match["hash"]) if match else None


def prediction_path(predictions: Path, task: str, index: int) -> Path:
    """``<predictions>/<task>/<index>.png``: a test prediction of one task (``semseg`` or ``depth``) in the
    MiniScapes encoding, as a run's predictions/ folder and submission.zip hold them."""
    if task not in PREDICTION_TASKS:
        raise ValueError(f"no prediction task {task!r}; expected one of {', '.join(PREDICTION_TASKS)}")
    return Path(predictions) / task / f"{index}.png"


# ------------------------------------------------------------------------------------------ entry folder
def has_started(run_dir: Path) -> bool:
    """Whether a trainer has written the run's status (it has started at least once)."""
    return (Path(run_dir) / STATUS_FILE).is_file()


def log_path(run_dir: Path) -> Path:
    """Console output of a run's ``mtl-train`` processes (appended per attempt), kept beside its directory."""
    return run_dir.parent / LOGS_DIR / f"{run_dir.name}.log"


def remember_profile(entry_dir: Path, profile: str) -> None:
    """Record ``profile`` as the one an entry's runs were last started with (``entry_dir`` = runs/<entry>)."""
    Path(entry_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(entry_dir) / PROFILE_FILE, profile + "\n")


def remembered_profile(entry_dir: Path) -> Optional[str]:
    """The profile of the entry's last `run`, or None when it never ran (or the file is unreadable)."""
    try:
        name = (Path(entry_dir) / PROFILE_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name or None


def remember_racing(entry_dir: Path, settings: Optional[dict[str, Any]]) -> None:
    """Record how the entry's last `run` raced: its racing settings, or None when it did not race."""
    Path(entry_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(entry_dir) / RACING_FILE, json.dumps({"racing": settings}) + "\n")


def remembered_racing(entry_dir: Path) -> tuple[bool, Optional[dict[str, Any]]]:
    """(known, settings): whether the entry's last `run` recorded how it raced, and the settings it raced with
    (None: it did not race). An unreadable record counts as unknown."""
    try:
        data = json.loads((Path(entry_dir) / RACING_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False, None
    if not isinstance(data, dict) or not (data.get("racing") is None or isinstance(data.get("racing"), dict)):
        return False, None
    return True, data.get("racing")


def find_run_dirs(root: str | Path) -> Iterator[Path]:
    """Run directories (holding a config) below ``root``, sorted; never descends into a run.

    Unlike a recursive glob this does not walk a run's predictions/ and checkpoints/ folders,
    which hold thousands of files per run on the real dataset.
    """
    root = Path(root)
    if (root / CONFIG_FILE).is_file():
        yield root
        return
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if child.name != WANDB_DIR:
            yield from find_run_dirs(child)


# ------------------------------------------------------------------------------------------ lock
def lock_held(run_dir: Path) -> bool:
    """Whether a live process holds the run directory's lock (``mtl-train`` keeps it for its whole life).

    Creates nothing and opens nothing for writing, so it works on a read-only runs folder: no lock file
    means nobody holds it (the holder creates it), and ``flock`` (what filelock uses on POSIX) takes a
    read-only descriptor."""
    import fcntl

    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_holder(run_dir: Path) -> Optional[int]:
    """The pid written into the lock file by its latest holder (meaningful while ``lock_held``)."""
    try:
        return int((Path(run_dir) / LOCK_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


class RunDirectory:
    """The paths of one run's files, its lock, and the rule for reusing the directory."""

    # Each path is joined when asked for: planning reads the status of every run folder (tens of thousands of
    # RunDirectory objects for the registry), and joining all sixteen paths up front was most of that time.
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def status_path(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST_CHECKPOINT

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_DIR

    @property
    def submission(self) -> Path:
        return self.path / SUBMISSION_FILE

    @property
    def damaged_submission(self) -> Path:
        return self.path / DAMAGED_SUBMISSION_FILE

    @property
    def source_zip(self) -> Path:
        return self.path / SOURCE_ZIP_FILE

    @property
    def wandb(self) -> Path:
        return self.path / WANDB_DIR

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def slurm_jobs(self) -> Path:
        return self.path / SLURM_JOBS_FILE

    @property
    def environment(self) -> Path:
        return self.path / ENVIRONMENT_FILE

    @property
    def log(self) -> Path:
        return log_path(self.path)

    def prediction(self, task: str, index: int) -> Path:
        """``predictions/<task>/<index>.png``, in the MiniScapes encoding of that task."""
        return prediction_path(self.predictions, task, index)

    def prediction_dir(self, task: str) -> Path:
        """``predictions/<task>/``: every test prediction of one task."""
        return prediction_path(self.predictions, task, 0).parent

    def check_same_run(self, differences: list[str]) -> None:
        """Refuse to reuse a directory whose recorded code or hyperparameters differ (``differences``)."""
        if differences:
            raise RunRefused(
                f"run directory {self.path} holds a different run; refusing to resume:\n  "
                + "\n  ".join(differences[:20])
                + "\nUse another --log_dir, or delete the directory to start over.")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the directory's lock for the block; RunLocked when another process holds it."""
        import filelock

        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.lock_path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise RunLocked(f"run directory {self.path} is in use by another process (lock {self.lock_path})") \
                from None
        try:
            self.lock_path.write_text(f"{os.getpid()}\n")  # who holds it (lock_holder); flock ignores content
            yield
        finally:
            lock.release()

    def remove_stale_temporaries(self) -> None:
        """Delete the ``.<name>.<random>.tmp`` files of writes that a kill cut short (a checkpoint's is as
        large as the checkpoint). Only the holder of the directory lock may call this: no write is live."""
        for path in self.path.rglob(".*.tmp"):
            if path.is_file() and WANDB_DIR not in path.relative_to(self.path).parts:
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete everything in the directory but its lock file, so the run starts over from nothing. Only the
        lock's holder may call this; the lock file stays (deleting it would let another process lock a new one)."""
        import shutil

        for child in self.path.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
