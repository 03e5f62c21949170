"""The run directory contract (mtl.run): names, the typed status and its writer, lock, exit codes, stop
signals, and what the scheduler plans from them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import filelock
import pytest

from mtl import cli
from mtl.ablate.scheduler import Action, ActionKind, planned_action
from mtl.run import layout as rundir
from mtl.run.errors import RecordError, RunLocked, RunRefused
from mtl.run.layout import RunDirectory
from mtl.run.model import ExitCode, RunState, ValidationPoint
from mtl.run.records import is_finished, read_record, read_status, recorded_state
from mtl.run.status import StatusWriter
from mtl.run.stopping import StopSignals, describe_signal
from planting import placeholder_submission

REPO = Path(__file__).resolve().parents[1]


def test_run_name_round_trip_and_foreign_names():
    name = rundir.run_name("lr-0.01", 3, "0a1b2c3d")
    assert name == "lr-0.01-s3-0a1b2c3d"
    assert rundir.parse_run_name(name) == rundir.RunName("lr-0.01", 3, "0a1b2c3d")
    for foreign in ("sweeps", "lr-s3", "lr-sX-0a1b2c3d", "lr-s3-NOTHEX"):
        assert rundir.parse_run_name(foreign) is None


def test_status_states_and_finished(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert recorded_state(run.path) is RunState.NOT_STARTED and read_status(run.path) is None
    assert read_record(run.path).state is RunState.NOT_STARTED
    StatusWriter(run).finished(epoch=1, step=7, best=None)
    assert recorded_state(run.path) is RunState.FINISHED and read_status(run.path).step == 7
    assert not is_finished(run.path)  # finished also needs the packed submission
    run.submission.write_bytes(b"zip")
    assert is_finished(run.path)
    run.status_path.write_text("{not json")
    assert recorded_state(run.path) is RunState.UNKNOWN
    with pytest.raises(RecordError, match="status.json: is not valid JSON"):
        read_record(run.path)  # the one reader names damage instead of hiding it


def test_the_status_is_one_typed_model_read_and_written_one_way(tmp_path):
    run = RunDirectory(tmp_path / "run")
    writer = StatusWriter(run)
    best = ValidationPoint(step=4, epoch=2, grader=3.5, iou=12.0, si_logrmse=46.5)
    writer.running(num_epochs=2, config_hash="0a1b2c3d", code_version="v", dataset="d", pid=os.getpid(),
                   host="h", epoch=1, step=2, best=None)
    writer.validated(epoch=2, step=4, best=best, elapsed_s=1.23456, eta_s=None, progress=None)
    status = read_status(run.path)
    assert status.state is RunState.RUNNING and status.best == best and status.elapsed_s == 1.235
    assert status.started_at is not None and status.updated_at is not None
    # A status written by a newer version keeps its extra keys through a rewrite by this one.
    data = json.loads(run.status_path.read_text())
    run.status_path.write_text(json.dumps({**data, "added_later": [1, 2]}))
    StatusWriter(run).interrupted(error="stopped", epoch=2, step=4, best=best)
    assert json.loads(run.status_path.read_text())["added_later"] == [1, 2]
    with pytest.raises(TypeError, match="not fields of a run's status: stat"):
        StatusWriter(run).record(stat="finished")  # a misspelt field never reaches the file
    with pytest.raises(RecordError, match=r"status.json: field 'epoch'"):
        StatusWriter(run).record(epoch="two")  # nor does a value of the wrong type
    # A damaged field is named by the one reader.
    run.status_path.write_text(json.dumps({**data, "best": {"step": "four"}}))
    with pytest.raises(RecordError, match=r"status.json: field 'best.step'"):
        read_status(run.path)
    assert recorded_state(run.path) is RunState.UNKNOWN


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
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 143]


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
            "from mtl.run.stopping import STOP_SIGNALS, ignore_stop_signals\n"
            "ignore_stop_signals(0)\n"
            "for s in STOP_SIGNALS: os.kill(os.getpid(), s)\n"
            "assert all(signal.getsignal(s) is signal.SIG_IGN for s in STOP_SIGNALS)\n")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_running_status_of_a_gone_trainer_reads_stopped(tmp_path):
    run = RunDirectory(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    StatusWriter(run).record(state=RunState.RUNNING, pid=dead.pid, host=socket.gethostname())
    assert recorded_state(run.path) is RunState.STOPPED  # its pid is gone on this host
    StatusWriter(run).record(pid=os.getpid())
    assert recorded_state(run.path) is RunState.STOPPED  # alive, but nobody holds the lock
    with run.exclusive():
        assert recorded_state(run.path) is RunState.RUNNING
    assert str(planned_action(SimpleNamespace(run_dir=run.path))) == "resume"


def test_planned_actions_and_their_wording(tmp_path):
    def action(name: str, **flags) -> Action:
        return planned_action(SimpleNamespace(run_dir=tmp_path / name), **flags)

    assert action("fresh") == Action(ActionKind.START) and str(action("fresh")) == "start"
    RunDirectory(tmp_path / "cut").checkpoints.mkdir(parents=True)
    assert str(action("cut")) == "resume"
    StatusWriter(RunDirectory(tmp_path / "done")).record(state=RunState.FINISHED)
    # Its submission is lost: mtl-train rebuilds it.
    assert str(action("done")) == "rebuild (submission.zip is missing)"
    RunDirectory(tmp_path / "done").submission.write_bytes(b"")  # damaged: not the archive it packed
    assert action("done").kind is ActionKind.REBUILD and "damaged archive" in str(action("done"))
    StatusWriter(RunDirectory(tmp_path / "done")).record(submission=placeholder_submission(tmp_path / "done"))
    assert action("done").kind is ActionKind.SKIP and str(action("done")) == "skip (finished)"
    assert str(action("done", force=True)) == "restart"
    StatusWriter(RunDirectory(tmp_path / "bad")).record(state=RunState.DIVERGED)
    assert str(action("bad")) == "skip (diverged; --retry-failed retries)"
    assert str(action("bad", retry_failed=True)) == "retry"
    with RunDirectory(tmp_path / "held").exclusive():
        assert str(action("held")) == "locked"


def test_readers_do_not_load_torch():
    code = ("import sys, mtl.run.layout, mtl.run.records, mtl.run.status, mtl.run.summary, mtl.run.recovery, "
            "mtl.run.io, mtl.suite, report.store, report.cache; "
            "sys.exit('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 0
