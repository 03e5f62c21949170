"""The run directory (DESIGN.md section 4): its file names, status, states, lock and name, and reading it back.

Every other module goes through this one: nothing else spells the run directory's file names. It imports
no torch (checkpoints are written through ``mtl.io.atomic_torch_save``, which loads torch when called),
so the suite, the reports and the benchmarks read runs without paying for it.

``metrics.jsonl`` is the source of truth for every report. A run's result is its best validation point
(:func:`best_point`: highest grader, ties to the higher IoU - SI-logRMSE, then the earlier step); all
metrics are reported at that point, never each metric's own best.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from mtl.best import GRADER_KEY, best_point
from mtl.io import atomic_write_text

# ------------------------------------------------------------------------------------------ layout
CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"  # derived from the trace and status (mtl.run_summary) for fast reports
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
PREDICTIONS_DIR = "predictions"
SUBMISSION_FILE = "submission.zip"
SOURCE_ZIP_FILE = "source.zip"
WANDB_DIR = "wandb"
LOCK_FILE = ".lock"
SLURM_JOBS_FILE = "slurm-jobs.jsonl"  # one line per SLURM submission of the run: job id, submitit folder
# Beside the run directories of an entry (not inside one): the console output of each run's attempts.
LOGS_DIR = ".logs"
# Beside the run directories of an entry: the profile of its last `run`, the default of every reader.
PROFILE_FILE = ".profile"
# The files a run's record is read from; a reader caching a summary watches these.
RECORD_FILES = (CONFIG_FILE, STATUS_FILE, METRICS_FILE)

# Status key with the run's W&B page, written by the trainer when the run logs online (reports link to it).
STATUS_WANDB_URL = "wandb_url"
# libyaml's loader parses the same documents as SafeLoader about 25 times faster; it matters with
# thousands of runs. PyYAML built without libyaml still gives the same result.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
REPO_ROOT = Path(__file__).resolve().parent.parent


class State:
    """The ``state`` of a run's status, and what readers say for a run without one."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    DIVERGED = "diverged"
    SKIPPED = "skipped"  # cannot run on this machine (ImageNet weights unavailable offline); error says why
    NOT_RUN = "not run"  # no status yet (planning and scheduling)
    NOT_STARTED = "not started"  # no status yet (a record read back)
    UNKNOWN = "unknown"  # a status without a state, or one that does not parse
    STOPPED = "stopped"  # read back for a status left "running" by a trainer that is gone (SIGKILL, node lost)


class ExitCode(enum.IntEnum):
    """The exit codes of ``mtl-train``."""

    FINISHED = 0  # or already finished
    FAILED = 1
    REFUSED = 2  # bad config, or a directory that holds another run
    DIVERGED = 3
    LOCKED = 4  # another process holds the run directory
    UNAVAILABLE = 5  # cannot run here (a resource such as the ImageNet weights is absent): state skipped
    STOPPED = 143  # SIGTERM/SIGINT, after writing a checkpoint


class RunRefused(RuntimeError):
    """The run directory holds a different run (code or hyperparameters), or another process owns it."""


class RunLocked(RunRefused):
    """Another live process holds the run directory's lock."""


# ------------------------------------------------------------------------------------------ defaults
def default_runs_dir() -> Path:
    return Path(os.environ.get("MTL_RUNS_DIR") or "runs")


def default_ablations_dir() -> Path:
    return Path(os.environ.get("MTL_ABLATIONS_DIR") or REPO_ROOT / "ablations")


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
    """``<variant>-s<seed>-<config hash>``, the variant shortened (:func:`short_variant`) when too long."""
    return str(RunName(short_variant(variant), seed, config_hash))


def parse_run_name(name: str) -> Optional[RunName]:
    """The parts of a run directory's name, or None for a name not built by :func:`run_name`.

    The variant is as the name holds it: :func:`short_variant` of the entry's variant name."""
    match = RUN_NAME.match(name)
    return RunName(match["variant"], int(match["seed"]), match["hash"]) if match else None


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


# ------------------------------------------------------------------------------------------ status
def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's status; {} when it has none yet or it does not parse (it is written atomically)."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return status if isinstance(status, dict) else {}


def recorded_state(run_dir: Path) -> str:
    """The state in a run's status: not run, running, finished, failed, diverged, interrupted -- or stopped,
    for a status that says running while its trainer is gone (:func:`trainer_gone`)."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except FileNotFoundError:
        return State.NOT_RUN
    except json.JSONDecodeError:
        return State.UNKNOWN  # the status is written atomically, so this is a foreign or damaged file
    state = status.get("state", State.UNKNOWN) if isinstance(status, dict) else State.UNKNOWN
    return State.STOPPED if state == State.RUNNING and trainer_gone(run_dir, status) else state


def trainer_gone(run_dir: Path, status: dict[str, Any]) -> bool:
    """Whether the trainer a "running" status names is gone: its pid no longer exists on this host, or
    nobody holds the run's lock (a trainer holds it for its whole life, on any host sharing the folder).
    A folder whose lock cannot be tried (read-only) is judged by the pid alone."""
    pid, host = status.get("pid"), status.get("host")
    if isinstance(pid, int) and not isinstance(pid, bool) and host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by someone else
            pass
    try:
        return not lock_held(run_dir)
    except OSError:
        return False


def has_status(run_dir: Path) -> bool:
    return (Path(run_dir) / STATUS_FILE).exists()


def is_finished(run_dir: Path) -> bool:
    """Finished means a finished status and a packed submission."""
    return RunDirectory(run_dir).is_finished()


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
    """The files of one run and the rules for reopening it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / CONFIG_FILE
        self.status_path = self.path / STATUS_FILE
        self.metrics = self.path / METRICS_FILE
        self.summary_path = self.path / SUMMARY_FILE
        self.checkpoints = self.path / CHECKPOINTS_DIR
        self.last = self.checkpoints / LAST_CHECKPOINT
        self.best = self.checkpoints / BEST_CHECKPOINT
        self.predictions = self.path / PREDICTIONS_DIR
        self.submission = self.path / SUBMISSION_FILE
        self.source_zip = self.path / SOURCE_ZIP_FILE
        self.wandb = self.path / WANDB_DIR
        self.lock_path = self.path / LOCK_FILE

    def read_status(self) -> dict[str, Any]:
        return read_status(self.path)

    def write_status(self, **fields: Any) -> dict[str, Any]:
        status = {**self.read_status(), **fields, "updated_at": now_iso()}
        atomic_write_text(self.status_path, json.dumps(status, indent=2) + "\n")
        return status

    def is_finished(self) -> bool:
        return self.read_status().get("state") == State.FINISHED and self.submission.exists()

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


# ------------------------------------------------------------------------------------------ records
@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.status.get("state", State.UNKNOWN)

    @property
    def validation_points(self) -> list[dict[str, Any]]:
        return [p for p in self.points if GRADER_KEY in p]

    def best(self, key: str = GRADER_KEY) -> dict[str, Any] | None:
        return best_point(self.points, key)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file; a torn final line (a write cut short) is ignored, a bad middle line is an error."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    points = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
    if tail.strip():
        try:  # a final line without newline is kept only if it parses
            points.append(json.loads(tail))
        except json.JSONDecodeError:
            pass
    return points


def read_config(run_dir: Path) -> Any:
    """The run's resolved config as parsed YAML (None when the file is empty); FileNotFoundError if absent."""
    return yaml.load((Path(run_dir) / CONFIG_FILE).read_text(), Loader=YAML_LOADER)


def read_status_strict(run_dir: Path) -> dict[str, Any]:
    """The run's status, ``{"state": "not started"}`` without one; a damaged status raises ValueError."""
    status_path = Path(run_dir) / STATUS_FILE
    return json.loads(status_path.read_text()) if status_path.exists() else {"state": State.NOT_STARTED}


def read_run(path: str | Path) -> RunRecord:
    run = RunDirectory(path)
    config = read_config(run.path) if run.config_path.exists() else {}
    return RunRecord(path=run.path, config=config or {}, status=read_status_strict(run.path),
                     points=read_jsonl(run.metrics))


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


def iter_runs(root: str | Path) -> Iterator[RunRecord]:
    """Every run directory below ``root``, in sorted order."""
    for run_dir in find_run_dirs(root):
        yield read_run(run_dir)
