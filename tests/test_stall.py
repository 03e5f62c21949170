"""A trainer that makes no progress (SIGSTOPped, or hung) shows as stalled -- in ``status``, in the ``run`` that
started it, and in a second ``run`` that waits on it -- with how long it has been quiet, the limit
($MTL_STALL_AFTER_S) and what to do; a healthy one is never called stalled."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from mtl.run.layout import RunDirectory
from mtl.run.model import Progress, RunState
from mtl.run.records import STALL_ENV, read_status, stall_of
from mtl.run.status import StatusWriter
from support import REPO, ablate_here, tiny_ablations, write_tiny_entry


def running_status(run: RunDirectory, pid: int, quiet_s: float):
    at = time.time() - quiet_s
    StatusWriter(run).record(state=RunState.RUNNING, pid=pid, host=socket.gethostname(),
                             progress=Progress(step=3, total_steps=10, epoch=1, at=at))
    data = json.loads(run.status_path.read_text())
    data["updated_at"] = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")
    run.status_path.write_text(json.dumps(data))
    return read_status(run.path)


def test_a_live_trainer_quiet_past_the_limit_is_stalled_and_a_recent_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv(STALL_ENV, "60")
    run = RunDirectory(tmp_path / "run")
    with run.exclusive():  # this process stands in for the trainer: alive, holding the lock
        assert stall_of(run.path, running_status(run, os.getpid(), quiet_s=5)) is None
        stall = stall_of(run.path, running_status(run, os.getpid(), quiet_s=600))
    assert stall is not None and stall.startswith("no progress recorded for 10m00s (stalled after 1m00s, "
                                                  "$MTL_STALL_AFTER_S)"), stall
    assert f"pid {os.getpid()} on {socket.gethostname()} is alive but records nothing" in stall
    assert stall_of(run.path, read_status(run.path)) is None  # the lock released: a gone trainer is not stalled


def test_a_stopped_trainer_is_stalled_once_quiet_for_a_short_while(tmp_path, monkeypatch):
    monkeypatch.setenv(STALL_ENV, "3600")
    run = RunDirectory(tmp_path / "run")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        time.sleep(0.5)
        with run.exclusive():
            assert stall_of(run.path, running_status(run, sleeper.pid, quiet_s=5)) is None
            stall = stall_of(run.path, running_status(run, sleeper.pid, quiet_s=40))
        assert stall is not None and f"is stopped by a signal (SIGSTOP or Ctrl-Z): `kill -CONT {sleeper.pid}`" in stall
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_bad_stall_limit_is_refused(tmp_path, capsys, monkeypatch):
    from mtl.suite import main

    monkeypatch.setenv(STALL_ENV, "soon")
    assert main(["status", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "MTL_STALL_AFTER_S='soon': expected a positive number of seconds" in capsys.readouterr().err


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.mark.slow
def test_a_sigstopped_trainer_shows_as_stalled_in_status_and_both_runs(tmp_path, cache_dir, capsys, monkeypatch):
    ablations = tiny_ablations(tmp_path / "ablations")
    write_tiny_entry(ablations, "t.stall", overrides={"num_epochs": 400})
    args = ["run", "t.stall", "--devices", "cpu", "--ablations-dir", str(ablations), "--runs-dir",
            str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONPATH": str(REPO), STALL_ENV: "8"}  # above the 5 s between progress records
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with open(first_log, "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "mtl.suite", *args], cwd=tmp_path, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    second, trainer = None, None
    try:
        def progressing() -> bool:
            found = list((tmp_path / "runs" / "t.stall").glob("*-s0-*"))
            status = read_status(found[0]) if found else None
            return status is not None and status.progress is not None and status.epoch >= 1

        _wait_for(progressing, 240, "the trainer's first epoch")
        (run_dir,) = (tmp_path / "runs" / "t.stall").glob("*-s0-*")
        trainer = read_status(run_dir).pid
        os.kill(trainer, signal.SIGSTOP)

        monkeypatch.setenv(STALL_ENV, env[STALL_ENV])
        monkeypatch.setenv("COLUMNS", "400")

        def status_says() -> str:  # asked again and again while waiting: in this process
            return ablate_here(capsys, "status", "t.stall", *args[4:]).stdout

        _wait_for(lambda: "stalled" in status_says(), 60, "status to say stalled")
        said = status_says()
        assert f"kill -CONT {trainer}" in said and "no progress recorded for" in said, said
        _wait_for(lambda: "stalled: no progress recorded" in first_log.read_text(), 60, "the first run to say so")
        with open(second_log, "w") as log:
            second = subprocess.Popen([sys.executable, "-m", "mtl.suite", *args], cwd=tmp_path, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for(lambda: "the process training it is stalled" in second_log.read_text(), 120,
                  "the waiting run to say so")
        assert f"kill -CONT {trainer}" in second_log.read_text()
        os.kill(trainer, signal.SIGCONT)
        _wait_for(lambda: "progressing again" in first_log.read_text(), 60, "the first run to see it go on")
    finally:
        if trainer is not None:
            os.kill(trainer, signal.SIGCONT)
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
