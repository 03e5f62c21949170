"""The fork-server launcher of `mtl-ablate run` (mtl/ablate/forkserver.py): a forked training is mtl-train --
its exit code, its console output in its log, and a stop signal's checkpoint-and-exit-143 -- without a new
interpreter's start."""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import wait

import pytest

from mtl.ablate.forkserver import ForkedJob, available
from mtl.run.model import ExitCode
from support import tiny_args

pytestmark = pytest.mark.skipif(not available(), reason="no fork server on this platform")


def finished(job: ForkedJob, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while (code := job.poll()) is None:
        assert time.time() < deadline, "the forked training did not end"
        time.sleep(0.05)
    return code


def test_a_forked_training_exits_as_mtl_train_and_writes_its_console_to_its_log(tmp_path):
    log = tmp_path / "logs" / "help.log"
    assert finished(ForkedJob(["--help"], {"PATH": "/usr/bin"}, log)) == 0
    assert log.read_text().startswith("usage: mtl-train")
    bad = tmp_path / "logs" / "bad.log"
    assert finished(ForkedJob(["--batch_sise=3"], {}, bad)) == ExitCode.REFUSED
    assert "mtl-train: unknown config key 'batch_sise'" in bad.read_text()


def test_a_forked_trainings_sentinel_is_readable_once_its_exit_code_is_known(tmp_path):
    """The scheduler sleeps on the sentinels of its running jobs: ready must mean ended."""
    job = ForkedJob(["--help"], {"PATH": "/usr/bin"}, tmp_path / "help.log")
    assert wait([job.sentinel()], timeout=240) == [job.sentinel()]
    assert job.poll() == 0


@pytest.mark.slow
def test_a_forked_training_stopped_by_sigterm_checkpoints_and_exits_143(tmp_path, cache_dir):
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    job = ForkedJob([*tiny_args(num_epochs=20), f"--log_dir={run_dir}"], dict(os.environ), log)
    deadline = time.time() + 240
    while not (run_dir / "metrics.jsonl").exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    job.terminate(signal.SIGTERM)
    assert finished(job) == ExitCode.STOPPED, log.read_text()
    assert (run_dir / "checkpoints" / "last.pt").exists()
    assert "mtl-train: interrupted: stopped by SIGTERM" in log.read_text()
