"""The scheduler's state machine (mtl.ablate.scheduler) against a fake backend (tests/fake_backend.py):
slots, skip/retry/resume from the recorded state, exit codes to outcomes, waiting for a run another
process holds, lost lock races, adopted jobs, --force, stop signals, and what the monitor and
``on_outcome`` hear. Real run directories and locks under tmp_path; no process is started, so each test
takes milliseconds. What only real processes show (a signal reaching a real mtl-train, a real resume,
SLURM) stays in test_ablate_run.py, test_faults_suite.py and test_slurm_cluster.py."""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

import fake_backend as fake
from fake_backend import FakeBackend, OtherProcess, RecordingMonitor, make_spec
from mtl.ablate.backends import LocalJob, Placement
from mtl.ablate.display import Monitor
from mtl.ablate.scheduler import RunOutcome, Scheduler
from mtl.ablate.slurm import SubmititJob
from mtl.run.layout import RunDirectory, lock_held
from mtl.run.model import ExitCode, Outcome, RunState
from mtl.run.records import read_status, recorded_state
from mtl.run.status import StatusWriter
from mtl.run.stopping import STOP_SIGNALS
from planting import placeholder_submission


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def heard_by_the_test():
    """Stop signals that reach the test's own handlers, installed around the tests that send or set one: a
    scheduler that failed to take the signals cannot interrupt the session, and it must put these back."""
    heard: list[int] = []

    def handler(signum, _frame):
        heard.append(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield heard, handler
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def schedule(backend: FakeBackend, monitor=None, **options) -> tuple[Scheduler, RecordingMonitor]:
    monitor = monitor or RecordingMonitor()
    return Scheduler(backend, monitor, **{"poll_interval": 0, "lock_grace_s": 0.05, **options}), monitor


def plant(spec, state: RunState, error: str = "", submission: bool = False) -> None:
    """A run directory as an earlier attempt left it."""
    run = RunDirectory(spec.run_dir)
    packed = placeholder_submission(run.path) if submission else None
    StatusWriter(run).record(state=state, error=error or None, pid=1, host="elsewhere", submission=packed)


def by_name(outcomes: list[RunOutcome]) -> dict[str, RunOutcome]:
    return {o.spec.name: o for o in outcomes}


# ------------------------------------------------------------------------------------------ slots
def test_runs_start_on_free_slots_and_never_more_at_once_than_slots(runs):
    specs = [make_spec(runs, f"v{i}") for i in range(5)]
    backend = FakeBackend({s.name: [fake.slow(polls=2 + i)] for i, s in enumerate(specs)}, slots=2)
    scheduler, monitor = schedule(backend)
    outcomes = scheduler.run(specs)
    assert [o.state for o in outcomes] == [Outcome.FINISHED] * 5
    assert [o.spec for o in outcomes] == specs and all(o.launched and o.exit_code == 0 for o in outcomes)
    assert backend.most_at_once == 2 and backend.shared_slots == []
    assert [job.name for job in backend.jobs] == [s.name for s in specs]  # in plan order, each once
    assert [len(names) for names in backend.submissions] == [2, 1, 1, 1]  # then one per freed slot
    assert {event[2] for event in monitor.of("started")} == set(backend.slots())
    assert monitor.of("begin") == [("begin", [s.name for s in specs], 2)]


def test_a_freed_slot_starts_the_next_run_without_waiting_a_poll_interval(runs):
    specs = [make_spec(runs, f"v{i}") for i in range(3)]
    backend = FakeBackend({s.name: [fake.finish()] for s in specs}, slots=1)
    scheduler, _ = schedule(backend, poll_interval=30)
    started = time.monotonic()
    assert [o.state for o in scheduler.run(specs)] == [Outcome.FINISHED] * 3
    assert time.monotonic() - started < 5


class SleepingBackend:
    """One slot; each run a real child process that sleeps a moment and exits, writing no record."""

    name, queues = "local", False

    def __init__(self):
        self.jobs: list[LocalJob] = []

    def slots(self) -> list[Placement]:
        return [Placement("cpu", 1)]

    def start_many(self, launches, entry_id: str) -> list[LocalJob]:
        jobs = [LocalJob([sys.executable, "-c", "import time; time.sleep(0.3)"], dict(os.environ), launch.log_path)
                for launch in launches]
        self.jobs.extend(jobs)
        return jobs

    def adopt(self, run_dir):
        return None


def test_a_process_ending_wakes_the_scheduler_before_its_poll_interval(runs):
    """The scheduler waits on each running process's end (a pidfd), not only on its poll interval: the second
    run starts, and ``run`` returns, as soon as each process exits."""
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd on this platform: the scheduler polls")
    specs = [make_spec(runs, f"v{i}") for i in range(2)]
    backend = SleepingBackend()
    scheduler, _ = schedule(backend, poll_interval=30)
    started = time.monotonic()
    outcomes = scheduler.run(specs)
    assert time.monotonic() - started < 20  # two poll intervals would be 60 s
    assert [o.launched for o in outcomes] == [True, True]
    assert [job.poll() for job in backend.jobs] == [0, 0]
    assert [job.sentinel() for job in backend.jobs] == [None, None]  # each pidfd closed once its end was read


def test_a_queueing_backend_takes_every_run_at_once(runs):
    specs = [make_spec(runs, f"v{i}") for i in range(4)]
    backend = FakeBackend({s.name: [fake.slow(polls=3)] for s in specs}, slots=1, queues=True)
    scheduler, monitor = schedule(backend)
    assert [o.state for o in scheduler.run(specs)] == [Outcome.FINISHED] * 4
    assert backend.submissions == [[s.name for s in specs]]  # one submission (a SLURM job array)
    assert backend.most_at_once == 4
    assert {event[2] for event in monitor.of("started")} == set(backend.slots())


def test_no_slot_is_refused():
    class NoSlots(FakeBackend):
        def slots(self):
            return []

    with pytest.raises(ValueError, match="no device slot"):
        Scheduler(NoSlots({}), RecordingMonitor())


# ------------------------------------------------------------------------------------------ recorded state
EARLIER = "failed earlier (use --retry-failed to retry): OSError: disk full"


@pytest.mark.parametrize(("state", "submission", "retry_failed", "started", "outcome", "message"), [
    pytest.param(RunState.FINISHED, True, False, False, Outcome.FINISHED, "already finished", id="finished"),
    pytest.param(RunState.FINISHED, True, True, False, Outcome.FINISHED, "already finished", id="finished-retry"),
    # Its submission was lost: mtl-train rebuilds it.
    pytest.param(RunState.FINISHED, False, False, True, Outcome.FINISHED, "", id="finished-no-submission"),
    pytest.param(RunState.FAILED, False, False, False, Outcome.FAILED, EARLIER, id="failed"),
    pytest.param(RunState.DIVERGED, False, False, False, Outcome.DIVERGED, EARLIER.replace("failed", "diverged", 1),
                 id="diverged"),
    pytest.param(RunState.FAILED, False, True, True, Outcome.FINISHED, "", id="failed-retry"),
    pytest.param(RunState.DIVERGED, False, True, True, Outcome.FINISHED, "", id="diverged-retry"),
    # It could not run here: trying again is cheap and picks up a fix.
    pytest.param(RunState.SKIPPED, False, False, True, Outcome.FINISHED, "", id="skipped"),
    pytest.param(RunState.INTERRUPTED, False, False, True, Outcome.FINISHED, "", id="interrupted"),
    # "running", but its trainer is gone (stopped): resumed.
    pytest.param(RunState.RUNNING, False, False, True, Outcome.FINISHED, "", id="stopped"),
])
def test_the_recorded_state_decides_whether_a_run_starts(runs, state, submission, retry_failed, started, outcome,
                                                         message):
    spec = make_spec(runs, "v")
    plant(spec, state, error="OSError: disk full", submission=submission)
    backend = FakeBackend({spec.name: [fake.finish()]})
    scheduler, monitor = schedule(backend, retry_failed=retry_failed)
    (result,) = scheduler.run([spec])
    assert (result.state, result.message, result.launched) == (outcome, message, started)
    assert backend.started(spec.name) == int(started)
    assert len(monitor.of("started")) == int(started) and len(monitor.of("settled")) == 1
    if not started:
        assert result.exit_code is None and read_status(spec.run_dir).state is state  # untouched


def test_a_refusal_suggests_force_only_for_a_directory_an_earlier_attempt_wrote(runs):
    """mtl-train refuses a machine that lacks the dataset or device before it writes anything: --force
    (which deletes the directory) would not help there, so only a refused earlier run gets the hint."""
    fresh, written = make_spec(runs, "fresh"), make_spec(runs, "written")
    plant(written, RunState.INTERRUPTED)
    scheduler, _ = schedule(FakeBackend({fresh.name: [fake.refuse("dataset_root is not a folder")],
                                         written.name: [fake.refuse()]}))
    outcomes = by_name(scheduler.run([fresh, written]))
    assert "--force" not in outcomes[fresh.name].message
    assert "--force deletes it and starts over" in outcomes[written.name].message


# ------------------------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize(("attempt", "outcome", "code", "says"), [
    pytest.param(fake.finish(), Outcome.FINISHED, 0, [], id="finished"),
    pytest.param(fake.fail("ValueError: bad batch"), Outcome.FAILED, 1, ["ValueError: bad batch"], id="failed"),
    pytest.param(fake.refuse(), Outcome.REFUSED, 2, ["refusing to resume"], id="refused"),
    pytest.param(fake.diverge("non-finite loss at step 7"), Outcome.DIVERGED, 3, ["non-finite loss at step 7"],
                 id="diverged"),
    pytest.param(fake.skip("no ImageNet weights offline"), Outcome.SKIPPED, 5,
                 ["cannot run on this machine, recorded as skipped: no ImageNet weights offline"], id="skipped"),
    pytest.param(fake.killed(signal.SIGKILL), Outcome.KILLED, -signal.SIGKILL, ["killed by signal 9: ", "fake-train: "],
                 id="SIGKILL"),
    pytest.param(fake.killed(signal.SIGSEGV), Outcome.KILLED, -signal.SIGSEGV,
                 [f"killed by signal {int(signal.SIGSEGV)}"], id="SIGSEGV"),
    # A stop signal that killed it before its handler was installed: interrupted, resumed next time.
    pytest.param(fake.killed(signal.SIGTERM), Outcome.INTERRUPTED, -signal.SIGTERM, [], id="SIGTERM-early"),
    pytest.param(fake.exits(ExitCode.STOPPED), Outcome.INTERRUPTED, 143, [], id="stopped"),
    # Exit 0 without a finished record breaks mtl-train's contract.
    pytest.param(fake.exits(0), Outcome.FAILED, 0, ["fake-train: "], id="0-unfinished"),
    pytest.param(fake.exits(7), Outcome.FAILED, 7, ["fake-train: "], id="unknown-code"),
])
def test_exit_codes_map_to_outcomes_with_messages(runs, attempt, outcome, code, says):
    spec = make_spec(runs, "v")
    scheduler, _ = schedule(FakeBackend({spec.name: [attempt]}))
    (result,) = scheduler.run([spec])
    assert (result.state, result.exit_code, result.launched) == (outcome, code, True)
    for part in says:
        assert part in result.message, result.message
    if outcome.failed:
        assert result.message.endswith(f"(log: {RunDirectory(spec.run_dir).log})")
    if not says:
        assert result.message == ""


def test_exit_4_of_a_locked_directory_maps_to_locked(runs):
    """Exit 4 outside a stop is waited for (below); its outcome, when settled, is LOCKED, not a failure."""
    spec = make_spec(runs, "v")
    scheduler, _ = schedule(FakeBackend({}))
    outcome = scheduler.outcome_of(spec, ExitCode.LOCKED, job=None)
    assert outcome.state is Outcome.LOCKED and not outcome.failed


def test_a_killed_run_is_killed_and_its_status_reads_stopped(runs):
    spec = make_spec(runs, "v")
    scheduler, _ = schedule(FakeBackend({spec.name: [fake.killed(polls=2)]}))
    (result,) = scheduler.run([spec])
    assert result.state is Outcome.KILLED and result.failed
    assert read_status(spec.run_dir).state is RunState.RUNNING  # as the kill left it
    assert recorded_state(spec.run_dir) is RunState.STOPPED  # nobody holds its lock


# ------------------------------------------------------------------------------------------ other processes
@pytest.mark.parametrize(("left", "started", "outcome", "message"), [
    (RunState.FINISHED, 0, Outcome.FINISHED, "already finished"),
    (RunState.INTERRUPTED, 1, Outcome.FINISHED, ""),  # resumed here
    (RunState.FAILED, 0, Outcome.FAILED, "failed earlier (use --retry-failed to retry): it broke there"),
])
def test_a_run_another_process_trains_is_waited_for_then_taken_as_it_left_it(runs, left, started, outcome, message):
    spec, other_spec = make_spec(runs, "held"), make_spec(runs, "free")
    other = OtherProcess(spec.run_dir).take()
    backend = FakeBackend({spec.name: [fake.finish()], other_spec.name: [fake.slow(polls=3)]}, slots=2)
    scheduler, monitor = schedule(backend, lock_grace_s=0)  # training it: waited for whatever the grace

    def leave():
        assert backend.started(spec.name) == 0 and lock_held(spec.run_dir)  # still waiting after 20 passes
        other.leave(left, error="it broke there")

    monitor.at(20, leave)
    try:
        results = by_name(scheduler.run([spec, other_spec]))
    finally:
        other.leave()
    assert (results[spec.name].state, results[spec.name].message) == (outcome, message)
    assert backend.started(spec.name) == started
    assert results[other_spec.name].state is Outcome.FINISHED  # the other run went on meanwhile
    said = [n for n in monitor.notes if "another process is training it" in n]
    assert said == [f"{spec.entry_id} held s0: another process is training it (pid {os.getppid()} on "
                    f"{read_status(spec.run_dir).host}); waiting for it to finish"]


def test_a_live_holder_that_does_not_train_yet_is_waited_for_past_the_grace(runs):
    """An mtl-train starting up, or a --force clearing the directory, holds the lock before any status says
    running: as long as the holder it names lives, the scheduler waits."""
    spec = make_spec(runs, "v")
    other = OtherProcess(spec.run_dir, trains=False).take()
    backend = FakeBackend({spec.name: [fake.finish()]})
    scheduler, monitor = schedule(backend, lock_grace_s=0)
    monitor.at(20, other.leave)
    try:
        (result,) = scheduler.run([spec])
    finally:
        other.leave()
    assert (result.state, result.launched, backend.started(spec.name)) == (Outcome.FINISHED, True, 1)
    assert monitor.refreshes >= 20


def test_a_lock_held_by_something_that_does_not_train_is_locked_after_the_grace(runs):
    spec, other_spec = make_spec(runs, "v"), make_spec(runs, "w")
    other = OtherProcess(spec.run_dir, pid=None, trains=False).take()  # never says who it is
    backend = FakeBackend({other_spec.name: [fake.finish()]})
    scheduler, _ = schedule(backend, lock_grace_s=0.1)
    started = time.time()
    try:
        results = by_name(scheduler.run([spec, other_spec]))
        assert time.time() - started >= 0.1
    finally:
        other.leave()
    result = results[spec.name]
    assert result.state is Outcome.LOCKED and not result.failed and not result.launched
    assert result.message == (f"another process holds this run's lock ({RunDirectory(spec.run_dir).lock_path}) "
                              "without training it")
    assert backend.started(spec.name) == 0 and results[other_spec.name].state is Outcome.FINISHED


def test_a_lock_held_by_this_process_is_locked_at_once(runs):
    spec = make_spec(runs, "v")
    scheduler, _ = schedule(FakeBackend({}), lock_grace_s=10)
    started = time.time()
    with RunDirectory(spec.run_dir).exclusive():  # writes our own pid
        (result,) = scheduler.run([spec])
    assert result.state is Outcome.LOCKED and time.time() - started < 5


def test_a_queued_run_another_process_took_meanwhile_is_waited_for_not_started(runs):
    first, queued = make_spec(runs, "first"), make_spec(runs, "queued")
    other = OtherProcess(queued.run_dir)

    def take(job):
        if job.polls == 1:  # while "queued" waits for the slot, another mtl-ablate starts training it
            other.take()

    backend = FakeBackend({first.name: [fake.slow(polls=3, during=take)], queued.name: [fake.finish()]}, slots=1)
    scheduler, monitor = schedule(backend)
    monitor.at(10, lambda: other.leave(RunState.FINISHED))
    try:
        results = by_name(scheduler.run([first, queued]))
    finally:
        other.leave()
    assert backend.started(queued.name) == 0  # not even started to lose the race
    assert (results[queued.name].state, results[queued.name].message) == (Outcome.FINISHED, "already finished")
    assert results[first.name].state is Outcome.FINISHED


def test_losing_the_lock_race_waits_and_starts_again(runs):
    """Exit 4: another process took the lock after the scheduler looked; gone again, the run starts here."""
    spec = make_spec(runs, "v")
    backend = FakeBackend({spec.name: [fake.exits(ExitCode.LOCKED), fake.finish()]})
    scheduler, monitor = schedule(backend)
    heard: list[RunOutcome] = []
    (result,) = scheduler.run([spec], on_outcome=heard.append)
    assert (result.state, result.exit_code) == (Outcome.FINISHED, 0)
    assert backend.started(spec.name) == 2 and heard == [result]
    assert len(monitor.of("settled")) == 1 and len(monitor.of("started")) == 2
    assert any("another process is training it" in note for note in monitor.notes)


def test_the_winner_of_a_lock_race_is_waited_for_and_its_result_taken(runs):
    spec = make_spec(runs, "v")
    other = OtherProcess(spec.run_dir)
    backend = FakeBackend({spec.name: [fake.finish(at_start=other.take)]})  # the other takes the lock first
    scheduler, monitor = schedule(backend)
    monitor.at(10, lambda: other.leave(RunState.FINISHED))
    try:
        (result,) = scheduler.run([spec])
    finally:
        other.leave()
    assert backend.jobs[0].code == ExitCode.LOCKED  # the fake trainer could not take the lock
    assert (result.state, result.message) == (Outcome.FINISHED, "already finished")
    assert backend.started(spec.name) == 1 and monitor.refreshes >= 10


# ------------------------------------------------------------------------------------------ adopt, force
def test_an_adopted_job_is_followed_not_started_again(runs):
    queued, fresh = make_spec(runs, "queued"), make_spec(runs, "fresh")
    plant(queued, RunState.INTERRUPTED)  # as a requeued SLURM job leaves it between two attempts
    backend = FakeBackend({fresh.name: [fake.finish()]}, queues=True, adoptable={queued.run_dir: fake.slow(polls=3)})
    scheduler, monitor = schedule(backend)
    results = by_name(scheduler.run([queued, fresh]))
    assert backend.adopt_calls == [queued.run_dir, fresh.run_dir]
    assert backend.submissions == [[fresh.name]]  # the adopted run is not submitted again
    adopted = next(job for job in backend.jobs if job.name == queued.name)
    assert adopted.polls == 4 and ("started", queued.name, backend.slots()[0], adopted) in monitor.events
    assert (results[queued.name].state, results[queued.name].launched) == (Outcome.FINISHED, True)
    assert results[fresh.name].state is Outcome.FINISHED


def test_force_clears_the_directory_under_its_lock_and_starts_over(runs, monkeypatch):
    spec = make_spec(runs, "v")
    plant(spec, RunState.FINISHED, submission=True)
    run = RunDirectory(spec.run_dir)
    run.checkpoints.mkdir()
    run.best.write_bytes(b"weights")
    run.metrics.write_text('{"step": 1}\n')
    cleared: list[bool] = []
    clear = RunDirectory.clear

    def clear_checked(self):
        cleared.append(lock_held(self.path))  # the lock is ours while the files go
        clear(self)

    monkeypatch.setattr(RunDirectory, "clear", clear_checked)
    backend = FakeBackend({spec.name: [fake.finish()]})
    scheduler, _ = schedule(backend, force=True)
    (result,) = scheduler.run([spec])
    assert cleared == [True]
    assert set(backend.jobs[0].found) <= {".lock"}  # it started from nothing
    assert (result.state, result.launched) == (Outcome.FINISHED, True)
    assert not run.best.exists() and not run.metrics.exists()


def test_force_does_not_clear_a_run_another_process_trains(runs):
    """--force waits for the other process, then takes the run as it left it: not cleared a second time."""
    spec = make_spec(runs, "v")
    other = OtherProcess(spec.run_dir).take()
    backend = FakeBackend({spec.name: [fake.finish()]})
    scheduler, monitor = schedule(backend, force=True)
    monitor.at(5, lambda: other.leave(RunState.FINISHED))
    try:
        (result,) = scheduler.run([spec])
    finally:
        other.leave()
    assert (result.state, result.message) == (Outcome.FINISHED, "already finished")
    assert backend.started(spec.name) == 0 and RunDirectory(spec.run_dir).submission.exists()


# ------------------------------------------------------------------------------------------ stopping
@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_stops_the_runs_with_it_and_starts_nothing_more(runs, heard_by_the_test, signum):
    heard, handler = heard_by_the_test
    a, b, queued, held = (make_spec(runs, name) for name in ("a", "b", "queued", "held"))

    def send(job):
        if job.polls == 2:
            os.kill(os.getpid(), signum)  # the user's Ctrl-C (or scancel, a closed terminal, ...)

    other = OtherProcess(held.run_dir).take()
    backend = FakeBackend({a.name: [fake.slow(polls=100, during=send)], b.name: [fake.slow(polls=100)],
                           queued.name: [fake.finish()]}, slots=2)
    scheduler, monitor = schedule(backend)
    heard_outcomes: list[RunOutcome] = []
    try:
        results = by_name(scheduler.run([a, b, queued, held], on_outcome=heard_outcomes.append))
    finally:
        other.leave()
    assert scheduler.stop_signal == signum and heard == []  # the scheduler's handler took it
    for spec in (a, b):
        job = next(job for job in backend.jobs if job.name == spec.name)
        assert job.terminated == [signum]  # with the signal the user sent, once
        assert (results[spec.name].state, results[spec.name].exit_code) == (Outcome.INTERRUPTED, 143)
        assert read_status(spec.run_dir).error.startswith(f"stopped by {signal.Signals(signum).name}")
    for spec in (queued, held):
        assert (results[spec.name].state, results[spec.name].message) == (Outcome.NOT_STARTED,
                                                                         "stopped before it started")
        assert backend.started(spec.name) == 0
    assert Counter(o.spec.name for o in heard_outcomes) == {s.name: 1 for s in (a, b, queued, held)}
    assert all(signal.getsignal(s) is handler for s in STOP_SIGNALS)  # the previous handlers are back
    assert monitor.kinds()[-1] == "end"


def test_a_stop_signal_set_while_running_ends_the_loop_once_the_runs_stopped(runs, heard_by_the_test):
    spec = make_spec(runs, "v")

    def stop(job):
        if job.polls == 1:
            scheduler.stop_signal = signal.SIGTERM

    backend = FakeBackend({spec.name: [fake.slow(polls=1000, during=stop)]})
    scheduler, _ = schedule(backend)
    (result,) = scheduler.run([spec])
    assert result.state is Outcome.INTERRUPTED and backend.jobs[0].terminated == [signal.SIGTERM]
    assert backend.jobs[0].polls == 2  # stopped at the next poll, not after its 1000


def test_a_run_that_loses_a_lock_race_while_stopping_is_locked_not_waited_for(runs, heard_by_the_test):
    spec = make_spec(runs, "v")

    def stop(job):
        scheduler.stop_signal = signal.SIGINT

    backend = FakeBackend({spec.name: [fake.exits(ExitCode.LOCKED, polls=2, during=stop, ignores_terminate=True)]})
    scheduler, _ = schedule(backend)
    heard: list[RunOutcome] = []
    (result,) = scheduler.run([spec], on_outcome=heard.append)
    assert (result.state, result.exit_code) == (Outcome.LOCKED, 4) and heard == [result]
    assert backend.started(spec.name) == 1 and scheduler.waiting == {}


def test_the_signal_handlers_are_restored_when_a_job_raises(runs, heard_by_the_test):
    _, handler = heard_by_the_test
    spec = make_spec(runs, "v")

    def broken(job):
        raise RuntimeError("the backend lost its connection")

    scheduler, monitor = schedule(FakeBackend({spec.name: [fake.slow(polls=5, during=broken)]}))
    with pytest.raises(RuntimeError, match="lost its connection"):
        scheduler.run([spec])
    assert all(signal.getsignal(s) is handler for s in STOP_SIGNALS)
    assert monitor.kinds()[-1] == "end"


# ------------------------------------------------------------------------------------------ what is heard
def test_on_outcome_once_per_run_and_the_monitor_hears_every_event(runs):
    done, broke, fresh, raced, dies = (make_spec(runs, n) for n in ("done", "broke", "fresh", "raced", "dies"))
    plant(done, RunState.FINISHED, submission=True)
    plant(broke, RunState.FAILED, error="earlier error")
    backend = FakeBackend({fresh.name: [fake.slow(polls=2)], raced.name: [fake.exits(ExitCode.LOCKED), fake.finish()],
                           dies.name: [fake.killed(polls=1)]}, slots=2)
    scheduler, monitor = schedule(backend)
    heard: list[RunOutcome] = []
    specs = [done, broke, fresh, raced, dies]
    outcomes = scheduler.run(specs, on_outcome=heard.append)
    assert [o.spec for o in outcomes] == specs  # in plan order, whatever order they ended in
    assert sorted(map(id, heard)) == sorted(map(id, outcomes))  # each run heard once, the same outcome
    assert {o.spec.name: o.state for o in outcomes} == {
        done.name: Outcome.FINISHED, broke.name: Outcome.FAILED, fresh.name: Outcome.FINISHED,
        raced.name: Outcome.FINISHED, dies.name: Outcome.KILLED}
    kinds = monitor.kinds()
    assert kinds[0] == "begin" and kinds[-1] == "end" and kinds.count("begin") == kinds.count("end") == 1
    assert monitor.of("settled") == [("settled", o.spec.name, o.state) for o in heard]  # in the same order
    assert [(e[1], e[3]) for e in monitor.of("started")] == [(job.name, job) for job in backend.jobs]
    assert monitor.refreshes >= 1


def test_the_real_monitor_says_what_happened(runs):
    ok, bad, held = make_spec(runs, "ok"), make_spec(runs, "bad"), make_spec(runs, "held")
    other = OtherProcess(held.run_dir).take()

    class Releasing(Monitor):
        passes = 0

        def refresh(self):  # once per pass of the scheduler's loop
            super().refresh()
            self.passes += 1
            if self.passes == 5:
                other.leave(RunState.FINISHED)

    out = io.StringIO()
    backend = FakeBackend({ok.name: [fake.finish()], bad.name: [fake.fail("ValueError: bad batch")]}, slots=2)
    scheduler = Scheduler(backend, Releasing(Console(file=out, width=200), live=False), poll_interval=0)
    try:
        scheduler.run([ok, bad, held])
    finally:
        other.leave()
    text = out.getvalue()
    assert f"{ok.entry_id} ok s0: started on gpu 0 -> {ok.run_dir}" in text
    assert f"{bad.entry_id} bad s0: started on gpu 1" in text
    assert f"{ok.entry_id} ok s0: finished" in text
    assert f"{bad.entry_id} bad s0: failed - ValueError: bad batch (log: {RunDirectory(bad.run_dir).log})" in text
    assert f"{held.entry_id} held s0: another process is training it (pid {os.getppid()}" in text
    assert f"{held.entry_id} held s0: finished - already finished" in text


# ------------------------------------------------------------------------------------------ SLURM jobs
class LostJob:
    """A submitit job whose node was lost: done, its result file written, and its result raises (no status
    records why)."""

    job_id = "42_0"

    def __init__(self, folder: Path):
        self.paths = SimpleNamespace(result_pickle=folder / "42_0_result.pkl")
        folder.mkdir(parents=True, exist_ok=True)
        self.paths.result_pickle.write_bytes(b"")

    def done(self) -> bool:
        return True

    def result(self):
        raise RuntimeError("Job 42_0 (task: 0) failed during processing with trace:\nFailedJobError: node lost")


def test_a_slurm_job_that_failed_itself_is_failed_with_its_error(runs):
    spec = make_spec(runs, "v")

    class LosingBackend(FakeBackend):
        def start_many(self, launches, entry_id):
            self.submissions.append([Path(launch.config.log_dir).name for launch in launches])
            return [SubmititJob(LostJob(runs)) for _ in launches]

    scheduler, _ = schedule(LosingBackend({}, queues=True))
    (result,) = scheduler.run([spec])
    assert (result.state, result.exit_code) == (Outcome.FAILED, 1)
    assert result.message == f"FailedJobError: node lost (log: {RunDirectory(spec.run_dir).log})"
