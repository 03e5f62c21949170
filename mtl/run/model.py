"""The typed model of a run directory's records: its state, status, best and validation points, progress.

``status.json`` is one :class:`Status`; its best point and every headline of the trace's validation lines
are :class:`ValidationPoint`; the trainer's progress record is :class:`Progress`. Readers use attributes,
never dict keys, and a file that does not fit the model is a :class:`~mtl.run.errors.RecordError` naming
the file and the field (:mod:`mtl.run.records`). The trace's lines themselves stay JSON objects: they hold
every logged metric (per-class IoU, losses), the open-ended set W&B mirrors.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict

GRADER_KEY = "val/grader"
# The trace keys of a validation point's headline metrics (ValidationPoint's fields).
HEADLINE_KEYS = {"grader": GRADER_KEY, "iou": "val/iou", "si_logrmse": "val/si_logrmse"}
# How a console line names them.
HEADLINE_LABELS = {GRADER_KEY: "grader", "val/iou": "IoU", "val/si_logrmse": "SI-logRMSE"}
# The name readers give the state column of a table of runs (report frames, `status`, `run`).
STATE_COLUMN = "state"


class RunState(str, enum.Enum):
    """The state of a run: recorded by its trainer in ``status.json``, or (the last three) what a reader
    says of a run whose status is absent, damaged, or running while its trainer is gone."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"  # stopped by a signal after a checkpoint; the same command resumes it
    FAILED = "failed"
    DIVERGED = "diverged"  # non-finite loss; the last good checkpoint is kept
    SKIPPED = "skipped"  # cannot run on this machine (ImageNet weights unavailable offline); error says why
    PAUSED = "paused"  # stopped at a racing rung (stop_after_epoch), its checkpoint kept; continued on request
    PRUNED = "pruned"  # paused at a rung and left behind by its entry's race (the reason says whom it trails)
    NOT_STARTED = "not started"  # no status yet
    UNKNOWN = "unknown"  # a status that does not fit the model (damaged)
    STOPPED = "stopped"  # "running" in a status whose trainer is gone (SIGKILL, node lost)

    def __str__(self) -> str:
        return self.value

    @property
    def has_result(self) -> bool:
        """The run answered what it was planned for: finished, diverged (a result: this setting diverges),
        or skipped here with its reason."""
        return self in (RunState.FINISHED, RunState.DIVERGED, RunState.SKIPPED)


class Outcome(str, enum.Enum):
    """How one launch of a run ended for the scheduler: a recorded state, or what kept it from one."""

    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    DIVERGED = "diverged"
    SKIPPED = "skipped"
    PAUSED = "paused"  # reached the epoch it was asked to stop after (a racing rung)
    REFUSED = "refused"  # the directory holds another code version or config (mtl-train exit 2)
    KILLED = "killed"  # ended by a signal before it could record anything
    LOCKED = "locked"  # another process holds the directory's lock without training it
    NOT_STARTED = "not started"  # stopped before it started

    def __str__(self) -> str:
        return self.value

    @property
    def failed(self) -> bool:
        return self in (Outcome.FAILED, Outcome.DIVERGED, Outcome.REFUSED, Outcome.KILLED)

    @property
    def has_result(self) -> bool:
        return self in (Outcome.FINISHED, Outcome.DIVERGED, Outcome.SKIPPED, Outcome.PAUSED)


class ExitCode(enum.IntEnum):
    """The exit codes of ``mtl-train``."""

    FINISHED = 0  # or already finished
    FAILED = 1
    REFUSED = 2  # bad config, or a directory that holds another run
    DIVERGED = 3
    LOCKED = 4  # another process holds the run directory
    UNAVAILABLE = 5  # cannot run here (a resource such as the ImageNet weights is absent): state skipped
    PAUSED = 6  # stopped after the epoch it was asked to (stop_after_epoch), checkpoint kept: state paused
    STOPPED = 143  # SIGTERM/SIGINT, after writing a checkpoint


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValidationPoint(_Record):
    """A validation point's headline: where it was taken and the three metrics the grader is made of. A
    run's best point (in its status and best.pt) is one; so is each entry of its summary."""

    step: int
    epoch: int
    grader: float
    iou: float
    si_logrmse: float

    def headline(self) -> str:
        """The defined metrics in words: "grader 5.44 (IoU 11.22, SI-logRMSE 44.56)", or a single-task run's
        one metric with the grader said to be undefined."""
        metrics = [f"{label} {value:.2f}" for label, value in (("IoU", self.iou), ("SI-logRMSE", self.si_logrmse))
                   if math.isfinite(value)]
        if math.isnan(self.grader) and len(metrics) == 1:
            return f"{metrics[0]} (single-task: grader not defined)"
        return f"grader {self.grader:.2f}" + (f" ({', '.join(metrics)})" if metrics else "")

    @classmethod
    def of(cls, line: Mapping[str, Any]) -> ValidationPoint:
        """The headline of a trace line (``step``, ``epoch``, ``val/grader``, ``val/iou``, ``val/si_logrmse``);
        a metric the line lacks is NaN."""
        return cls(step=line["step"], epoch=line["epoch"],
                   **{name: _float(line.get(key)) for name, key in HEADLINE_KEYS.items()})


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


class Progress(_Record):
    """The trainer's latest progress, written into its status every few seconds (``mtl-ablate`` shows it)."""

    step: int
    total_steps: int
    epoch: int
    loss: Optional[float] = None
    lr: Optional[float] = None
    it_s: Optional[float] = None
    eta_s: Optional[float] = None
    at: float  # time.time() when written


class Resumed(_Record):
    """Where an attempt resumed from, with its pid (so the suite tells this attempt's resume from an earlier one)."""

    pid: int
    step: int
    epoch: int


class ModelSize(_Record):
    params: int
    gflops: float
    input: Optional[tuple[int, int]] = None  # (height, width) of the validation images it was measured at


class Packed(_Record):
    """What the trainer packed as submission.zip, checked when it was written: its size and sha256. A reader
    that finds the file otherwise knows it was damaged or replaced since (mtl.train.submission)."""

    bytes: int
    sha256: str


class Environment(_Record):
    """What one attempt of a run trained with, as W&B and ClearML record it: the code's git state, the
    installed packages, torch and its CUDA and cuDNN, the device. Texts are redacted before they are recorded
    (mtl.secrets): a secret in a dirty diff becomes ``[redacted <kind>]``, a home path ``~/``."""

    python: str
    platform: str
    torch: Optional[str] = None
    cuda: Optional[str] = None  # the CUDA torch was built with; None for a CPU build
    cudnn: Optional[str] = None
    device: str  # the device it trained on, by name ("cuda: NVIDIA H100 80GB HBM3", "cpu: <processor>")
    git_commit: Optional[str] = None  # None outside a git checkout
    git_dirty: Optional[bool] = None  # uncommitted changes to tracked files, or untracked files
    git_diff: Optional[str] = None  # `git diff HEAD` and the untracked files, cut at a bound (see git_diff_bytes)
    git_diff_bytes: int = 0  # the whole diff's size before it was cut
    git_diff_sha256: Optional[str] = None  # of the whole diff as recorded (redacted), to compare cut diffs
    packages: tuple[str, ...] = ()  # `pip freeze`: name==version of every installed distribution
    redacted: tuple[str, ...] = ()  # the kinds of secrets replaced in the texts above


class Environments(_Record):
    """``environment.json``: the environment of each attempt that differed from the one before (a run resumed
    on another machine has two), in order; the last is the latest attempt's."""

    attempts: tuple[Environment, ...]


class Status(BaseModel):
    """``status.json``: the run's state and error, where it stands, its best point and its bookkeeping.

    Written only by the trainer holding the run's lock (:class:`mtl.run.status.StatusWriter`); keys a newer
    version added are kept when it is rewritten."""

    model_config = ConfigDict(frozen=True, extra="allow")

    state: RunState
    error: Optional[str] = None
    traceback: Optional[str] = None
    num_epochs: Optional[int] = None
    config_hash: Optional[str] = None
    code_version: Optional[str] = None
    dataset: Optional[str] = None  # fingerprint of the dataset's files (mtl.run.recovery)
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    updated_at: Optional[str] = None
    pid: Optional[int] = None
    host: Optional[str] = None
    epoch: int = 0  # epochs done
    step: int = 0
    best: Optional[ValidationPoint] = None
    model: Optional[ModelSize] = None
    elapsed_s: Optional[float] = None
    eta_s: Optional[float] = None
    progress: Optional[Progress] = None
    resumed: Optional[Resumed] = None
    wandb_run_id: Optional[str] = None
    wandb_url: Optional[str] = None  # the run's W&B page while it logs online (reports link to it)
    diverged_step: Optional[int] = None
    checkpoint_step: Optional[int] = None  # the last good checkpoint's step, for a diverged run
    pruned: Optional[str] = None  # why its entry's race left it behind
    submission: Optional[Packed] = None  # submission.zip as packed (a finished run's)
