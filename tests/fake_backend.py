"""A scheduler backend that starts no process: each run follows a script of attempts, one per start.

The scheduler (mtl.ablate.scheduler) decides from the run directories what to start, wait for or skip,
and from exit codes what became of a run. This backend keeps that part real -- run directories under
the test's tmp_path, their status written through ``StatusWriter``, their lock held while a "trainer"
runs, its console log appended -- and fakes only the trainer: an :class:`Attempt` says what one start
does (finish, fail, diverge, refuse, skip, die by a signal, ...), after how many polls, and how it
answers ``terminate``. No subprocess, no torch: a scheduler test takes milliseconds.

:class:`OtherProcess` plays another ``mtl-ablate``'s trainer holding a run's lock; :class:`RecordingMonitor`
records what the scheduler tells its monitor and runs the test's actions at chosen loop iterations.
"""

from __future__ import annotations

import enum
import os
import signal
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mtl.ablate.backends import Launch, Placement
from mtl.ablate.planner import RunSpec
from mtl.config import make_config
from mtl.run.errors import RunLocked
from mtl.run.layout import RunDirectory, run_name
from mtl.run.model import ExitCode, RunState
from mtl.run.status import StatusWriter
from mtl.run.stopping import describe_signal
from planting import placeholder_submission

ENTRY = "problem0.fake"


def make_spec(runs_dir: Path, variant: str, seed: int = 0, entry_id: str = ENTRY) -> RunSpec:
    """A planned run as the planner makes one: its config (log_dir included) and where it lies."""
    config = make_config({"seed": seed, "wandb_group": entry_id, "wandb_job_type": variant})
    name = run_name(variant, seed, config.config_hash())
    run_dir = Path(runs_dir) / entry_id / name
    return RunSpec(name=name, variant=variant, seed=seed, config=config.replace(log_dir=str(run_dir)),
                   run_dir=run_dir, differences={}, entry_id=entry_id)


# ------------------------------------------------------------------------------------------ the script
class End(enum.Enum):
    FINISH = "finish"  # status finished, submission.zip, exit 0
    FAIL = "fail"  # status failed with the error, exit 1
    REFUSE = "refuse"  # the directory holds another run: says so in its log, exit 2
    DIVERGE = "diverge"  # status diverged, exit 3
    SKIP = "skip"  # cannot run here: status skipped with the reason, exit 5
    SIGNAL = "signal"  # killed by a signal: status left running, exit -signum
    EXIT = "exit"  # exits with ``code``, writing nothing (0 without a finished record, 4, anything else)


@dataclass
class Attempt:
    """What one start of a run does. It takes the run's lock as ``mtl-train`` does (exit 4 when another
    process holds it), records ``running``, answers ``polls`` polls with None, then ends as ``end`` says.
    ``terminate(signum)`` makes the next poll record ``interrupted`` (stopped by that signal) and exit 143,
    unless ``ignores_terminate``. ``at_start`` runs before the lock is tried (another process may take it
    then); ``during`` runs at each poll, with the job."""

    end: End
    polls: int = 0
    error: str = ""
    code: int = 0  # End.EXIT: the exit code; End.SIGNAL: the signal
    at_start: Optional[Callable[[], None]] = None
    during: Optional[Callable[[FakeJob], None]] = None
    ignores_terminate: bool = False


def finish(polls: int = 0, **kw: Any) -> Attempt:
    return Attempt(End.FINISH, polls, **kw)


def fail(error: str = "RuntimeError: the fake trainer failed", polls: int = 0, **kw: Any) -> Attempt:
    return Attempt(End.FAIL, polls, error=error, **kw)


def diverge(error: str = "non-finite loss at step 7", polls: int = 0, **kw: Any) -> Attempt:
    return Attempt(End.DIVERGE, polls, error=error, **kw)


def refuse(error: str = "run directory holds a different run; refusing to resume", **kw: Any) -> Attempt:
    return Attempt(End.REFUSE, error=error, **kw)


def skip(error: str = "PretrainedWeightsUnavailable: no ImageNet weights offline", **kw: Any) -> Attempt:
    return Attempt(End.SKIP, error=error, **kw)


def killed(signum: int = signal.SIGKILL, polls: int = 0, **kw: Any) -> Attempt:
    return Attempt(End.SIGNAL, polls, code=signum, **kw)


def exits(code: int, polls: int = 0, **kw: Any) -> Attempt:
    return Attempt(End.EXIT, polls, code=code, **kw)


def slow(polls: int, **kw: Any) -> Attempt:
    """Trains for ``polls`` polls, then finishes; a stop signal interrupts it."""
    return finish(polls, **kw)


# ------------------------------------------------------------------------------------------ the job
class FakeJob:
    """One start of a run: the Job protocol (``poll``, ``terminate``, ``describe``) over an Attempt."""

    def __init__(self, backend: FakeBackend, launch: Launch, attempt: Attempt, number: int):
        self.backend, self.launch, self.attempt, self.number = backend, launch, attempt, number
        self.run = RunDirectory(launch.config.log_dir)
        self.name = self.run.path.name
        self.polls = 0
        self.terminated: list[int] = []
        self.code: Optional[int] = None
        self.reported = False  # the scheduler has seen its exit code
        self._lock = ExitStack()
        # What the directory held when this attempt started (after a --force clear: only the lock file).
        self.found = sorted(p.name for p in self.run.path.iterdir()) if self.run.path.is_dir() else []
        self.log(f"attempt {number}: {attempt.end.value}")
        if attempt.at_start is not None:
            attempt.at_start()
        try:
            self._lock.enter_context(self.run.exclusive())
        except RunLocked as exc:
            self.log(f"mtl-train: {exc}")
            self.code = ExitCode.LOCKED
            return
        if attempt.end is not End.REFUSE:  # mtl-train refuses before it writes a status
            StatusWriter(self.run).record(state=RunState.RUNNING, error=None, pid=os.getpid(),
                                          host=socket.gethostname())

    def log(self, line: str) -> None:
        self.launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.launch.log_path, "a") as handle:
            handle.write(f"fake-train: {line}\n")

    # ---------------------------------------------------------------------------------- Job
    def poll(self) -> Optional[int]:
        if self.code is None:
            self.polls += 1
            if self.attempt.during is not None:
                self.attempt.during(self)
            if self.terminated and not self.attempt.ignores_terminate:
                self._interrupted(self.terminated[-1])
            elif self.polls > self.attempt.polls:
                self._end()
        if self.code is not None:
            self.reported = True
        return self.code

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        self.terminated.append(signum)

    def describe(self) -> str:
        return f"fake job {self.name} #{self.number}"

    def sentinel(self) -> None:
        return None  # the scheduler polls it (its script counts the polls)

    # ---------------------------------------------------------------------------------- endings
    def _exit(self, code: int) -> None:
        self._lock.close()
        self.code = code
        if code >= 0:  # a process killed by a signal says nothing more
            self.log(f"exit {code}")

    def _interrupted(self, signum: int) -> None:
        StatusWriter(self.run).interrupted(error=f"stopped by {describe_signal(signum)}; checkpoint at step 3",
                                           epoch=1, step=3, best=None)
        self._exit(ExitCode.STOPPED)

    def _end(self) -> None:
        end, error, writer = self.attempt.end, self.attempt.error, StatusWriter(self.run)
        if end is End.FINISH:
            writer.finished(epoch=2, step=10, best=None, submission=placeholder_submission(self.run.path))
            self._exit(ExitCode.FINISHED)
        elif end is End.FAIL:
            writer.failed(error=error, traceback=None)
            self.log(f"run failed: {error}")
            self._exit(ExitCode.FAILED)
        elif end is End.REFUSE:
            self.log(f"mtl-train: {error}")
            self._exit(ExitCode.REFUSED)
        elif end is End.DIVERGE:
            writer.diverged(error=error, diverged_step=7, checkpoint_step=5)
            self._exit(ExitCode.DIVERGED)
        elif end is End.SKIP:
            writer.skipped(error=error)
            self._exit(ExitCode.UNAVAILABLE)
        elif end is End.SIGNAL:
            self._exit(-self.attempt.code)  # the kernel ends it: the status still says running
        else:
            self._exit(self.attempt.code)


# ------------------------------------------------------------------------------------------ the backend
class FakeBackend:
    """The Backend protocol over scripts: ``scripts[run name]`` lists what each start of that run does (a
    start beyond the script fails the test). ``adoptable[run dir]``: a job started earlier that ``adopt``
    hands back. Records every submission, job and the most runs it had at once."""

    name = "fake"

    def __init__(self, scripts: dict[str, Sequence[Attempt]], slots: int = 1, queues: bool = False,
                 adoptable: Optional[dict[Path, Attempt]] = None):
        self.queues = queues
        self._slots = [Placement(str(i), 1) for i in range(slots)]
        self.scripts = {name: list(attempts) for name, attempts in scripts.items()}
        self.jobs: list[FakeJob] = []
        self.submissions: list[list[str]] = []  # run names of each start_many call
        self.adopt_calls: list[Path] = []
        self.adoptable = {Path(k): v for k, v in (adoptable or {}).items()}
        self.most_at_once = 0
        self.shared_slots: list[str] = []  # runs started on a slot another running job still held

    def slots(self) -> list[Placement]:
        return list(self._slots)

    def start_many(self, launches: Sequence[Launch], entry_id: str) -> list[FakeJob]:
        self.submissions.append([Path(launch.config.log_dir).name for launch in launches])
        jobs = []
        for launch in launches:
            name = Path(launch.config.log_dir).name
            assert launch.placement in self._slots, launch.placement
            assert launch.log_path == RunDirectory(launch.config.log_dir).log, launch.log_path
            if not self.scripts.get(name):
                raise AssertionError(f"{name} started once more than its script says")
            jobs.append(self._job(launch, self.scripts[name].pop(0)))
        return jobs

    def adopt(self, run_dir: Path) -> Optional[FakeJob]:
        self.adopt_calls.append(Path(run_dir))
        attempt = self.adoptable.pop(Path(run_dir), None)
        if attempt is None:
            return None
        config = make_config({}).replace(log_dir=str(run_dir))
        return self._job(Launch(config, self._slots[0], RunDirectory(run_dir).log), attempt)

    def _job(self, launch: Launch, attempt: Attempt) -> FakeJob:
        name = Path(launch.config.log_dir).name
        if not self.queues and any(j.launch.placement == launch.placement and not j.reported for j in self.jobs):
            self.shared_slots.append(name)
        job = FakeJob(self, launch, attempt, number=1 + sum(j.name == name for j in self.jobs))
        self.jobs.append(job)
        self.most_at_once = max(self.most_at_once, sum(not j.reported for j in self.jobs))
        return job

    def started(self, name: str) -> int:
        """How many times the run was started."""
        return sum(job.name == name for job in self.jobs)


# ------------------------------------------------------------------------------------------ other processes
class OtherProcess:
    """Another process holding a run's lock, as the ``mtl-train`` of another ``mtl-ablate`` does: the lock
    file names ``pid`` ("parent": our parent process, alive and not us), and while it ``trains`` the status says
    running under that pid. ``pid=None`` writes no pid (a holder that never says who it is)."""

    def __init__(self, run_dir: Path, pid: Optional[int] | str = "parent", trains: bool = True):
        self.run = RunDirectory(run_dir)
        self.pid = os.getppid() if pid == "parent" else pid
        self.trains = trains
        self._lock = ExitStack()

    def take(self) -> OtherProcess:
        self._lock.enter_context(self.run.exclusive())
        self.run.lock_path.write_text(f"{self.pid}\n" if self.pid is not None else "")
        if self.trains:
            StatusWriter(self.run).record(state=RunState.RUNNING, error=None, pid=self.pid, host=socket.gethostname())
        return self

    def leave(self, state: Optional[RunState] = None, error: str = "") -> None:
        """Release the lock, having recorded ``state`` (finished: with its submission.zip)."""
        writer = StatusWriter(self.run)
        if state is RunState.FINISHED:
            writer.finished(epoch=2, step=10, best=None, submission=placeholder_submission(self.run.path))
        elif state is not None:
            writer.record(state=state, error=error or None)
        self._lock.close()


# ------------------------------------------------------------------------------------------ the monitor
class RecordingMonitor:
    """The scheduler's monitor, recording its calls; ``at(n, action)`` runs ``action`` at the scheduler's
    n-th refresh (one per pass of its loop), where a test changes the world between two polls."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.notes: list[str] = []
        self.refreshes = 0
        self._actions: dict[int, list[Callable[[], None]]] = {}

    def at(self, refresh: int, action: Callable[[], None]) -> None:
        self._actions.setdefault(refresh, []).append(action)

    def begin(self, specs: list[RunSpec], slots: int = 1) -> None:
        self.events.append(("begin", [s.name for s in specs], slots))

    def started(self, spec: RunSpec, placement: Placement, job: Any) -> None:
        self.events.append(("started", spec.name, placement, job))

    def settled(self, outcome: Any) -> None:
        self.events.append(("settled", outcome.spec.name, outcome.state))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def refresh(self) -> None:
        self.refreshes += 1
        for action in self._actions.pop(self.refreshes, []):
            action()

    def end(self) -> None:
        self.events.append(("end",))

    def kinds(self) -> list[str]:
        return [event[0] for event in self.events]

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == kind]
