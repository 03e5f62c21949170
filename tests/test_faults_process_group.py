"""Stop signals sent to a run's whole process group with 2 DataLoader workers: SIGTERM (scancel,
preemption), SIGUSR2 (SLURM's time-limit warning) and SIGHUP (a closed terminal) each end the run
``interrupted`` with exit 143, and the rerun ends bit-identical to an unbroken run."""

from __future__ import annotations

import signal

import pytest

from faults.process_group import WORKERS, resume_and_compare, stop_group, train_process
from faults.runs import FREQUENT_CHECKPOINTS, fault_args

pytestmark = pytest.mark.slow

ARGV = [*fault_args(workers=WORKERS, workers_validation=WORKERS), FREQUENT_CHECKPOINTS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    base = tmp_path_factory.mktemp("group-reference")
    run_dir = base / "reference"
    assert train_process([*ARGV, f"--log_dir={run_dir}"], base / "reference.log", new_session=False).wait() == 0, \
        (base / "reference.log").read_text()
    return run_dir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP], ids=lambda s: s.name)
def test_group_signal_checkpoints_then_resumes_exactly(reference, tmp_path, signum):
    run_dir = tmp_path / "run"
    stopped = stop_group(ARGV, run_dir, signum, tmp_path / "stop.log")
    assert stopped.problems == []
    assert stopped.error.startswith(f"stopped by {signum.name} (")
    assert resume_and_compare(ARGV, run_dir, reference, tmp_path / "resume.log") == []
