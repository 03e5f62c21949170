"""The run directory contract (mtl.rundir): names, status, lock, exit codes, stop signals, and what the
scheduler plans from them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import filelock
import pytest

from mtl import cli, rundir
from mtl.ablate.scheduler import Action, ActionKind, planned_action
from mtl.rundir import ExitCode, RunDirectory, RunLocked, RunRefused, State
from mtl.stopping import StopSignals, describe_signal

REPO = Path(__file__).resolve().parents[1]


def test_run_name_round_trip_and_foreign_names():
    name = rundir.run_name("lr-0.01", 3, "0a1b2c3d")
    assert name == "lr-0.01-s3-0a1b2c3d"
    assert rundir.parse_run_name(name) == rundir.RunName("lr-0.01", 3, "0a1b2c3d")
    for foreign in ("sweeps", "lr-s3", "lr-sX-0a1b2c3d", "lr-s3-NOTHEX"):
        assert rundir.parse_run_name(foreign) is None


def test_status_states_and_finished(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert rundir.recorded_state(run.path) == State.NOT_RUN and run.read_status() == {}
    assert rundir.read_run(run.path).state == State.NOT_STARTED
    run.write_status(state=State.FINISHED, step=7)
    assert rundir.recorded_state(run.path) == "finished" and run.read_status()["step"] == 7
    assert not rundir.is_finished(run.path)  # finished also needs the packed submission
    run.submission.write_bytes(b"zip")
    assert rundir.is_finished(run.path)
    run.status_path.write_text("{not json")
    assert rundir.recorded_state(run.path) == State.UNKNOWN and run.read_status() == {}
    with pytest.raises(ValueError):
        rundir.read_run(run.path)  # the validating reader names damage instead of hiding it


def test_lock_is_exclusive_and_typed(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert not rundir.lock_held(run.path)
    with run.exclusive():
        assert rundir.lock_held(run.path)
        with pytest.raises(RunLocked, match="in use by another process") as caught, \
                RunDirectory(run.path).exclusive():
            pass
        assert isinstance(caught.value, RunRefused)
    assert not rundir.lock_held(run.path)


def test_mtl_train_exits_locked_when_another_process_holds_the_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = filelock.FileLock(str(RunDirectory(run_dir).lock_path))
    other.acquire()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = cli.main([f"--log_dir={run_dir}", "--dataset=synthetic", "--wandb_mode=disabled"])
    finally:
        other.release()
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert code == ExitCode.LOCKED == 4
    assert "in use by another process" in capsys.readouterr().err


def test_exit_codes_of_mtl_train():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 143]


def test_stop_signals_are_remembered_not_fatal():
    stop = StopSignals()
    previous = {s: signal.getsignal(s) for s in stop.signals}
    try:
        stop.install()
        assert stop.last is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == [signal.SIGTERM, signal.SIGINT] and stop.last == signal.SIGINT
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGHUP)
        assert stop.received[2:] == [signal.SIGUSR2, signal.SIGHUP]
        assert stop.describe() == "SIGHUP (terminal closed)"
        assert describe_signal(signal.SIGUSR2) == "SIGUSR2 (time limit)"
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_loader_workers_ignore_stop_signals(tmp_path):
    """A worker that ignores the stop signals survives one sent to its whole process group."""
    code = ("import os, signal, time\n"
            "from mtl.stopping import STOP_SIGNALS, ignore_stop_signals\n"
            "ignore_stop_signals(0)\n"
            "for s in STOP_SIGNALS: os.kill(os.getpid(), s)\n"
            "assert all(signal.getsignal(s) is signal.SIG_IGN for s in STOP_SIGNALS)\n")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_running_status_of_a_gone_trainer_reads_stopped(tmp_path):
    run = RunDirectory(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_status(state=State.RUNNING, pid=dead.pid, host=socket.gethostname())
    assert rundir.recorded_state(run.path) == State.STOPPED  # its pid is gone on this host
    run.write_status(pid=os.getpid())
    assert rundir.recorded_state(run.path) == State.STOPPED  # alive, but nobody holds the lock
    with run.exclusive():
        assert rundir.recorded_state(run.path) == State.RUNNING
    assert str(planned_action(SimpleNamespace(run_dir=run.path))) == "resume"


def test_planned_actions_and_their_wording(tmp_path):
    def action(name: str, **flags) -> Action:
        return planned_action(SimpleNamespace(run_dir=tmp_path / name), **flags)

    assert action("fresh") == Action(ActionKind.START) and str(action("fresh")) == "start"
    RunDirectory(tmp_path / "cut").checkpoints.mkdir(parents=True)
    assert str(action("cut")) == "resume"
    RunDirectory(tmp_path / "done").write_status(state=State.FINISHED)
    assert action("done").kind is ActionKind.SKIP and str(action("done")) == "skip (finished)"
    assert str(action("done", force=True)) == "restart"
    RunDirectory(tmp_path / "bad").write_status(state=State.DIVERGED)
    assert str(action("bad")) == "skip (diverged; --retry-failed retries)"
    assert str(action("bad", retry_failed=True)) == "retry"
    with RunDirectory(tmp_path / "held").exclusive():
        assert str(action("held")) == "locked"


def test_readers_do_not_load_torch():
    code = ("import sys, mtl.rundir, mtl.io, mtl.suite, report.store, report.cache; "
            "sys.exit('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 0
