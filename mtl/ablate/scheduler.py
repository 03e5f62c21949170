"""Runs planned specs on device slots: skip what is done, resume what was cut short, never run one twice.

Idempotence comes from the run directories: a run whose status is ``finished`` is skipped, an
interrupted or killed one is started again (``mtl-train`` resumes from its last checkpoint), a failed
or diverged one is retried only when asked. A run whose directory lock is held belongs to another live
process and is left alone; if two schedulers race past that check, the loser's ``mtl-train`` exits 4
and counts as "locked" here, not as a failure.
"""

from __future__ import annotations

import enum
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mtl import rundir
from mtl.rundir import ExitCode, State, lock_held, read_run, recorded_state
from mtl.stopping import STOP_SIGNALS

from .backends import Placement
from .planner import RunSpec

# mtl-train's exit code -> the run's outcome (a stop signal that killed it before its handler was installed: -signum).
EXIT_STATES = {
    ExitCode.FINISHED: State.FINISHED, ExitCode.FAILED: State.FAILED, ExitCode.REFUSED: "refused",
    ExitCode.DIVERGED: State.DIVERGED, ExitCode.LOCKED: "locked", ExitCode.STOPPED: State.INTERRUPTED,
    ExitCode.UNAVAILABLE: State.SKIPPED,
    **{-signum: State.INTERRUPTED for signum in STOP_SIGNALS},
}
FAILED_STATES = ("failed", "diverged", "refused", "killed")


@dataclass
class RunOutcome:
    spec: RunSpec
    state: str  # finished | failed | diverged | refused | killed | locked | interrupted | not started
    exit_code: Optional[int] = None
    message: str = ""
    launched: bool = False

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


def log_path(spec: RunSpec) -> Path:
    """Console output of a run's ``mtl-train`` processes (appended per attempt), kept beside its run directory."""
    return rundir.log_path(spec.run_dir)


class ActionKind(enum.Enum):
    START = "start"
    RESUME = "resume"
    RESTART = "restart"  # --force: delete the directory, start over
    RETRY = "retry"  # failed or diverged earlier, --retry-failed
    SKIP = "skip"
    LOCKED = "locked"  # another process is training it


@dataclass(frozen=True)
class Action:
    """What ``run`` will do with a run; ``reason`` says why a run is skipped (its recorded state)."""

    kind: ActionKind
    reason: str = ""

    def __str__(self) -> str:
        if self.kind is not ActionKind.SKIP:
            return self.kind.value
        if self.reason == State.FINISHED:
            return f"skip ({self.reason})"
        return f"skip ({self.reason}; --retry-failed retries)"


def planned_action(spec: RunSpec, retry_failed: bool = False, force: bool = False) -> Action:
    """What ``run`` will do with a run: start, resume, restart (--force), or skip it (and why)."""
    if lock_held(spec.run_dir):
        return Action(ActionKind.LOCKED)
    state = recorded_state(spec.run_dir)
    if force and spec.run_dir.exists():
        return Action(ActionKind.RESTART)
    if state == State.FINISHED:
        return Action(ActionKind.SKIP, state)
    if state in (State.FAILED, State.DIVERGED):
        return Action(ActionKind.RETRY) if retry_failed else Action(ActionKind.SKIP, state)
    if state == State.SKIPPED:
        # It could not run on this machine (weights absent); trying again is cheap and picks up a fix.
        return Action(ActionKind.RETRY)
    fresh = state == State.NOT_RUN and not rundir.RunDirectory(spec.run_dir).checkpoints.exists()
    return Action(ActionKind.START if fresh else ActionKind.RESUME)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class Scheduler:
    def __init__(
        self,
        backend: Any,
        slots: list[Placement],
        monitor: Any,
        retry_failed: bool = False,
        force: bool = False,
        poll_interval: float = 1.0,
    ):
        if not slots:
            raise ValueError("no device slot to run on")
        self.backend = backend
        self.slots = slots
        self.monitor = monitor
        self.retry_failed = retry_failed
        self.force = force
        self.poll_interval = poll_interval
        self.stop_signal: Optional[int] = None

    # ------------------------------------------------------------------------------------------ planning
    def triage(self, spec: RunSpec) -> Optional[RunOutcome]:
        """An outcome for a run that must not be launched now, or None to launch it."""
        action = planned_action(spec, self.retry_failed, self.force)
        if action.kind is ActionKind.LOCKED:
            return RunOutcome(spec, "locked", message="another process is training this run (its lock is held)")
        if action.kind is ActionKind.SKIP and action.reason == State.FINISHED:
            return RunOutcome(spec, "finished", message="already finished")
        if action.kind is ActionKind.SKIP:
            record = read_run(spec.run_dir)
            return RunOutcome(
                spec,
                record.state,
                message=f"{record.state} earlier (use --retry-failed to retry): {record.status.get('error') or ''}",
            )
        if action.kind is ActionKind.RESTART and spec.run_dir.exists():
            shutil.rmtree(spec.run_dir)  # --force: start from scratch, whatever the directory held
        return None

    def outcome_of(self, spec: RunSpec, code: int, job: Any) -> RunOutcome:
        if code in EXIT_STATES:
            state = EXIT_STATES[code]
        elif code < 0:
            state = "killed"
        else:
            state = "failed"
        if state == State.FINISHED and recorded_state(spec.run_dir) != State.FINISHED:
            state = "failed"  # exit 0 without a finished record breaks the mtl-train contract
        status = read_run(spec.run_dir).status if spec.run_dir.exists() else {}
        detail = status.get("error") or getattr(job, "error", None) or ""
        if state in ("failed", "refused", "killed", "locked") and not detail:
            detail = _tail(log_path(spec))
        if state == "killed":
            detail = f"killed by signal {-code}" + (f": {detail}" if detail else "")
        message = detail if state != "finished" else ""
        if state == State.SKIPPED:
            message = f"cannot run on this machine, recorded as skipped: {detail}"
        if state == "refused":
            message += " (the directory holds another code version or config; --force deletes it and starts over)"
        if state in FAILED_STATES:
            message += f" (log: {log_path(spec)})"
        return RunOutcome(spec, state, exit_code=code, message=message.strip(), launched=True)

    # ------------------------------------------------------------------------------------------ running
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum

    def _start(self, launches: list[tuple[RunSpec, Placement]]) -> list[Any]:
        """Start the runs: together (one SLURM job array) when the backend can, else one by one."""
        if not launches:
            return []
        start_many = getattr(self.backend, "start_many", None)
        if start_many is not None:
            return start_many([(s.config, p, log_path(s)) for s, p in launches], entry_id=launches[0][0].entry_id)
        return [self.backend.start(s.config, p, log_path(s)) for s, p in launches]

    def run(self, specs: list[RunSpec], on_outcome: Optional[Callable[[RunOutcome], None]] = None) -> list[RunOutcome]:
        outcomes: dict[Path, RunOutcome] = {}
        pending: list[RunSpec] = []
        self.monitor.begin(specs, slots=len(self.slots))

        def settle(outcome: RunOutcome) -> None:
            outcomes[outcome.spec.run_dir] = outcome
            self.monitor.settled(outcome)
            if on_outcome:
                on_outcome(outcome)

        free = list(self.slots)
        running: dict[Path, tuple[Any, Placement, RunSpec]] = {}
        adopt = getattr(self.backend, "adopt", None)  # a job queued earlier (SLURM) is followed, not resubmitted
        for spec in specs:
            earlier = adopt(spec.run_dir) if adopt is not None else None
            if earlier is not None:
                placement = free.pop(0)
                running[spec.run_dir] = (earlier, placement, spec)
                self.monitor.started(spec, placement, earlier)
                continue
            early = self.triage(spec)
            if early is None:
                pending.append(spec)
            else:
                settle(early)

        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        stopping = False
        try:
            while pending or running:
                if self.stop_signal is not None and not stopping:
                    stopping = True  # each run checkpoints and exits 143; wait for them below
                    for job, _, _ in running.values():
                        # The signal the user sent (Ctrl-C: SIGINT), so that the run's status names it.
                        job.terminate(self.stop_signal)
                    for spec in pending:
                        settle(RunOutcome(spec, "not started", message="stopped before it started"))
                    pending = []
                launches: list[tuple[RunSpec, Placement]] = []
                while pending and free:
                    spec = pending.pop(0)
                    if lock_held(spec.run_dir):  # taken since triage by another mtl-ablate
                        settle(RunOutcome(spec, "locked", message="another process is training this run"))
                        continue
                    launches.append((spec, free.pop(0)))
                for (spec, placement), job in zip(launches, self._start(launches)):
                    running[spec.run_dir] = (job, placement, spec)
                    self.monitor.started(spec, placement, job)
                for key, (job, placement, spec) in list(running.items()):
                    code = job.poll()
                    if code is not None:
                        del running[key]
                        free.append(placement)
                        settle(self.outcome_of(spec, code, job))
                self.monitor.refresh()
                if pending or running:
                    time.sleep(self.poll_interval)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.monitor.end()
        return [outcomes[spec.run_dir] for spec in specs]
