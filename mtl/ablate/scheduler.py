"""Runs planned specs on device slots: skip what is done, resume what was cut short, never run one twice.

Idempotence comes from the run directories: a run whose status is ``finished`` is skipped, an
interrupted or killed one is started again (``mtl-train`` resumes from its last checkpoint), a failed
or diverged one is retried only when asked. A run that another live process is training (its lock held,
its status running) is waited for, then taken as that process left it; if two schedulers race past the
check, the loser's ``mtl-train`` exits 4 and waits the same way. A lock held by something that is not
training the run counts as "locked" after a short grace. ``--force`` clears a directory only while
holding its lock, so two at once cannot delete under each other.
"""

from __future__ import annotations

import enum
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_readable
from pathlib import Path
from typing import Any, Callable, Optional

from mtl.run.errors import RecordError, RunLocked
from mtl.run.layout import RunDirectory, has_started, lock_held, lock_holder
from mtl.run.model import ExitCode, Outcome, RunState
from mtl.run.records import error_of, read_config, read_status, recorded_state, stall_of
from mtl.run.stopping import STOP_SIGNALS

from .backends import Backend, Job, Launch, Placement
from .planner import RunSpec

# mtl-train's exit code -> the run's outcome (a stop signal that killed it before its handler was installed: -signum).
EXIT_OUTCOMES: dict[int, Outcome] = {
    ExitCode.FINISHED: Outcome.FINISHED, ExitCode.FAILED: Outcome.FAILED, ExitCode.REFUSED: Outcome.REFUSED,
    ExitCode.DIVERGED: Outcome.DIVERGED, ExitCode.LOCKED: Outcome.LOCKED, ExitCode.STOPPED: Outcome.INTERRUPTED,
    ExitCode.UNAVAILABLE: Outcome.SKIPPED, ExitCode.PAUSED: Outcome.PAUSED,
    **{-signum: Outcome.INTERRUPTED for signum in STOP_SIGNALS},
}


@dataclass
class RunOutcome:
    spec: RunSpec
    state: Outcome
    exit_code: Optional[int] = None
    message: str = ""
    launched: bool = False

    @property
    def failed(self) -> bool:
        return self.state.failed


def log_path(spec: RunSpec) -> Path:
    """Console output of a run's ``mtl-train`` processes (appended per attempt), kept beside its run directory."""
    return RunDirectory(spec.run_dir).log


class ActionKind(enum.Enum):
    START = "start"
    RESUME = "resume"
    RESTART = "restart"  # --force: delete the directory, start over
    RETRY = "retry"  # failed or diverged earlier, --retry-failed
    REBUILD = "rebuild"  # finished, its submission.zip lost or damaged: mtl-train rebuilds it from best.pt
    REFUSE = "refuse"  # finished, but its records disagree (an edited config.yaml): named, never trained
    SKIP = "skip"
    LOCKED = "locked"  # another process is training it


@dataclass(frozen=True)
class Action:
    """What ``run`` will do with a run; ``reason`` says why a run is skipped (its recorded state), ``detail``
    why a finished run is rebuilt or refused."""

    kind: ActionKind
    reason: Optional[RunState] = None
    detail: str = ""

    def __str__(self) -> str:
        if self.kind is ActionKind.REBUILD:
            return f"rebuild ({self.detail})" if self.detail else "rebuild"
        if self.kind is ActionKind.REFUSE:
            return f"refuse ({self.detail})"
        if self.kind is not ActionKind.SKIP:
            return str(self.kind.value)
        if self.reason is RunState.FINISHED:
            return f"skip ({self.reason})"
        return f"skip ({self.reason}; --retry-failed retries)"


def planned_action(spec: RunSpec, retry_failed: bool = False, force: bool = False) -> Action:
    """What ``run`` will do with a run: start, resume, restart (--force), rebuild or refuse a finished one whose
    records do not check, or skip it (and why)."""
    if lock_held(spec.run_dir):
        return Action(ActionKind.LOCKED)
    state = recorded_state(spec.run_dir)
    run = RunDirectory(spec.run_dir)
    if force and run.path.exists():
        return Action(ActionKind.RESTART)
    if state is RunState.FINISHED:
        return finished_action(run)
    if state in (RunState.FAILED, RunState.DIVERGED):
        return Action(ActionKind.RETRY) if retry_failed else Action(ActionKind.SKIP, state)
    if state is RunState.SKIPPED:
        # It could not run on this machine (weights absent); trying again is cheap and picks up a fix.
        return Action(ActionKind.RETRY)
    fresh = state is RunState.NOT_STARTED and not run.checkpoints.exists()
    return Action(ActionKind.START if fresh else ActionKind.RESUME)


def finished_action(run: RunDirectory) -> Action:
    """A finished run counts as finished only when its records check themselves: its config.yaml hashes to
    the config it trained (else refused, naming both) and its submission.zip is the one it packed (else
    rebuilt from best.pt by mtl-train, which sets the damaged one aside)."""
    from mtl.train.submission import packed_problems  # (lazy: numpy and PIL, for a finished run only)

    try:
        status = read_status(run.path)
        read_config(run.path)  # checked against the status's config_hash
    except RecordError as exc:
        return Action(ActionKind.REFUSE, detail=str(exc))
    if not run.submission.exists():
        return Action(ActionKind.REBUILD, detail="submission.zip is missing")
    problems = packed_problems(run.submission, status.submission if status else None, run.status_path)
    if problems:
        return Action(ActionKind.REBUILD, detail=problems[0])
    return Action(ActionKind.SKIP, RunState.FINISHED)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class Scheduler:
    """Starts a plan's runs on a :class:`~mtl.ablate.backends.Backend` and follows them to their outcomes."""

    def __init__(
        self,
        backend: Backend,
        monitor: Any,
        retry_failed: bool = False,
        force: bool = False,
        poll_interval: float = 1.0,
        lock_grace_s: float = 10.0,
    ):
        self.backend = backend
        self.slots = backend.slots()
        if not self.slots:
            raise ValueError("no device slot to run on")
        self.monitor = monitor
        self.retry_failed = retry_failed
        self.force = force
        self.poll_interval = poll_interval
        self.lock_grace_s = lock_grace_s
        # Runs another process holds: run directory -> (spec, when first seen held).
        self.waiting: dict[Path, tuple[RunSpec, float]] = {}
        self.stalled: set[Path] = set()  # waited-for runs whose trainer was last seen stalled (said once)
        self.stop_signal: Optional[int] = None

    # ------------------------------------------------------------------------------------------ planning
    def triage(self, spec: RunSpec, force: Optional[bool] = None) -> Optional[RunOutcome]:
        """An outcome for a run that must not be launched now, or None to launch it (or to wait for it:
        then it is in ``waiting``)."""
        action = planned_action(spec, self.retry_failed, self.force if force is None else force)
        if action.kind is ActionKind.LOCKED:
            return self.wait_for(spec)
        if action.kind is ActionKind.SKIP and action.reason is RunState.FINISHED:
            return RunOutcome(spec, Outcome.FINISHED, message="already finished")
        if action.kind is ActionKind.REFUSE:
            return RunOutcome(spec, Outcome.REFUSED, message=action.detail)
        if action.kind is ActionKind.REBUILD:
            self.monitor.note(f"{spec.entry_id} {spec.variant} s{spec.seed}: finished, but {action.detail}: "
                              "rebuilding it from best.pt")
        if action.kind is ActionKind.SKIP:
            assert action.reason is not None
            earlier = f"{action.reason} earlier (use --retry-failed to retry): {error_of(spec.run_dir)}"
            return RunOutcome(spec, Outcome(action.reason.value), message=earlier)
        if action.kind is ActionKind.RESTART and spec.run_dir.exists():
            run = RunDirectory(spec.run_dir)
            try:  # --force: start from scratch, whatever the directory held -- under its lock
                with run.exclusive():
                    run.clear()
            except RunLocked:
                return self.wait_for(spec)
        return None

    def wait_for(self, spec: RunSpec) -> Optional[RunOutcome]:
        """Wait for a run whose lock another process holds; say so once."""
        if spec.run_dir not in self.waiting:
            try:
                status = read_status(spec.run_dir)
            except ValueError:
                status = None
            running = status is not None and status.state is RunState.RUNNING
            where = f" (pid {status.pid} on {status.host})" if status is not None and running else ""
            self.monitor.note(f"{spec.entry_id} {spec.variant} s{spec.seed}: another process is training it{where}; "
                              "waiting for it to finish")
            self.waiting[spec.run_dir] = (spec, time.time())
        return None

    def poll_waiting(self) -> tuple[list[RunSpec], list[RunOutcome]]:
        """Runs released since (to launch, or settled as the other process left them), and the ones held
        past the grace by something that is not training them."""
        launch, settled = [], []
        for run_dir, (spec, since) in list(self.waiting.items()):
            if lock_held(run_dir):
                self._say_stall(spec)
                # Held by another live process that wrote its pid (an mtl-train starting up or training, a
                # --force clearing it): wait. Held by this process, or by a holder that never says who it is
                # and does not train: locked.
                holder = lock_holder(run_dir)
                foreign = holder is not None and holder != os.getpid() and _alive(holder)
                if holder == os.getpid() or (not foreign and recorded_state(run_dir) is not RunState.RUNNING
                                             and time.time() - since > self.lock_grace_s):
                    del self.waiting[run_dir]
                    settled.append(RunOutcome(spec, Outcome.LOCKED, message="another process holds this run's lock "
                                              f"({RunDirectory(run_dir).lock_path}) without training it"))
                continue
            del self.waiting[run_dir]
            # Released: whatever the other process did is the run's state now; --force does not apply
            # again to a run another process just trained from scratch.
            early = self.triage(spec, force=False)
            if early is not None:
                settled.append(early)
            elif run_dir not in self.waiting:
                launch.append(spec)
        return launch, settled

    def _say_stall(self, spec: RunSpec) -> None:
        """Say when the process training a waited-for run stops making progress (and when it goes on), so that
        waiting on it is never silent."""
        try:
            status = read_status(spec.run_dir)
        except RecordError:
            return
        stall = stall_of(spec.run_dir, status) if status is not None else None
        label = f"{spec.entry_id} {spec.variant} s{spec.seed}"
        if stall and spec.run_dir not in self.stalled:
            self.stalled.add(spec.run_dir)
            self.monitor.note(f"{label}: the process training it is stalled: {stall}; still waiting for it")
        elif stall is None and spec.run_dir in self.stalled:
            self.stalled.discard(spec.run_dir)
            self.monitor.note(f"{label}: the process training it is progressing again")

    def outcome_of(self, spec: RunSpec, code: int, job: Job) -> RunOutcome:
        if code in EXIT_OUTCOMES:
            state = EXIT_OUTCOMES[code]
        elif code < 0:
            state = Outcome.KILLED
        else:
            state = Outcome.FAILED
        if state in (Outcome.FINISHED, Outcome.PAUSED) and recorded_state(spec.run_dir) is not RunState(state.value):
            state = Outcome.FAILED  # an exit code its record does not back breaks the mtl-train contract
        # The error only (a damaged trace is for the results to name).
        detail = error_of(spec.run_dir) or getattr(job, "error", None) or ""
        if state in (Outcome.FAILED, Outcome.REFUSED, Outcome.KILLED, Outcome.LOCKED) and not detail:
            detail = _tail(log_path(spec))
        if state is Outcome.KILLED:
            detail = f"killed by signal {-code}" + (f": {detail}" if detail else "")
        message = detail if state not in (Outcome.FINISHED, Outcome.PAUSED) else ""
        if state is Outcome.SKIPPED:
            message = f"cannot run on this machine, recorded as skipped: {detail}"
        if state is Outcome.REFUSED and has_started(spec.run_dir):  # (without a status: refused before writing)
            message += " (the directory holds another code version or config; --force deletes it and starts over)"
        if state.failed:
            message += f" (log: {log_path(spec)})"
        return RunOutcome(spec, state, exit_code=code, message=message.strip(), launched=True)

    # ------------------------------------------------------------------------------------------ running
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum

    def _wait_a_poll_interval(self, running: list[Job]) -> None:
        """Sleep one poll interval, or less: until a running job that can be waited on ends (its slot then
        takes the next run, and the last end ends ``run``, at once). Runs held by other processes, and SLURM
        jobs, are seen at the next poll."""
        sentinels = [fd for fd in (job.sentinel() for job in running) if fd is not None]
        if sentinels:
            wait_readable(sentinels, timeout=self.poll_interval)
        else:
            time.sleep(self.poll_interval)

    def _start(self, launches: list[tuple[RunSpec, Placement]]) -> list[Job]:
        """Start the runs, in one submission where the backend can (a SLURM job array)."""
        if not launches:
            return []
        return self.backend.start_many([Launch(s.config, p, log_path(s)) for s, p in launches],
                                       entry_id=launches[0][0].entry_id)

    def run(self, specs: list[RunSpec], on_outcome: Optional[Callable[[RunOutcome], None]] = None) -> list[RunOutcome]:
        outcomes: dict[Path, RunOutcome] = {}
        pending: list[RunSpec] = []
        self.monitor.begin(specs, slots=len(self.slots))

        def settle(outcome: RunOutcome) -> None:
            outcomes[outcome.spec.run_dir] = outcome
            self.monitor.settled(outcome)
            if on_outcome:
                on_outcome(outcome)

        # A queueing backend (SLURM) takes every run at once: one slot per run, all the same placement.
        free = list(self.slots) * (len(specs) if self.backend.queues else 1)
        running: dict[Path, tuple[Job, Placement, RunSpec]] = {}
        for spec in specs:
            earlier = self.backend.adopt(spec.run_dir)  # a job queued earlier (SLURM) is followed, not resubmitted
            if earlier is not None:
                placement = free.pop(0)
                running[spec.run_dir] = (earlier, placement, spec)
                self.monitor.started(spec, placement, earlier)
                continue
            early = self.triage(spec)
            if early is not None:
                settle(early)
            elif spec.run_dir not in self.waiting:
                pending.append(spec)

        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        stopping = False
        try:
            while pending or running or self.waiting:
                released, settled_elsewhere = self.poll_waiting()
                pending.extend(released)
                for outcome in settled_elsewhere:
                    settle(outcome)
                if self.stop_signal is not None and not stopping:
                    stopping = True  # each run checkpoints and exits 143; wait for them below
                    for job, _, _ in running.values():
                        # The signal the user sent (Ctrl-C: SIGINT), so that the run's status names it.
                        job.terminate(self.stop_signal)
                    for spec in [*pending, *(s for s, _ in self.waiting.values())]:
                        settle(RunOutcome(spec, Outcome.NOT_STARTED, message="stopped before it started"))
                    pending = []
                    self.waiting.clear()
                launches: list[tuple[RunSpec, Placement]] = []
                while pending and free:
                    spec = pending.pop(0)
                    if lock_held(spec.run_dir):  # taken since triage by another mtl-ablate
                        self.wait_for(spec)
                        continue
                    launches.append((spec, free.pop(0)))
                for (spec, placement), job in zip(launches, self._start(launches)):
                    running[spec.run_dir] = (job, placement, spec)
                    self.monitor.started(spec, placement, job)
                freed = False
                for key, (job, placement, spec) in list(running.items()):
                    code = job.poll()
                    if code is not None:
                        del running[key]
                        free.append(placement)
                        freed = True
                        if code == ExitCode.LOCKED and not stopping:  # lost a race to another process
                            self.wait_for(spec)
                            continue
                        settle(self.outcome_of(spec, code, job))
                self.monitor.refresh()
                if (pending or running or self.waiting) and not (freed and pending):  # a freed slot starts at once
                    self._wait_a_poll_interval([job for job, _, _ in running.values()])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.monitor.end()
        return [outcomes[spec.run_dir] for spec in specs]
