"""Stop signals sent to a run's whole process group with 2 DataLoader workers: SIGTERM (scancel,
preemption), SIGUSR2 (SLURM's time-limit warning) and SIGHUP (a closed terminal) each end the run
``interrupted`` with exit 143, and the rerun ends bit-identical to an unbroken run.

One run takes the three signals in turn, each in a later start (a resumed run must stop as cleanly as a
fresh one), then finishes: two trainings fewer than a run per signal, and the same checks."""

from __future__ import annotations

import signal

import pytest

from faults.launcher import run_train
from faults.process_group import WORKERS, resume_and_compare, stop_group
from faults.runs import FREQUENT_CHECKPOINTS, fault_args

pytestmark = pytest.mark.slow

# Four epochs of two steps: each start checkpoints at least one step before its signal, and steps are left.
ARGV = [*fault_args(workers=WORKERS, workers_validation=WORKERS, num_epochs=4), FREQUENT_CHECKPOINTS]
SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    base = tmp_path_factory.mktemp("group-reference")
    run_dir = base / "reference"
    assert run_train([*ARGV, f"--log_dir={run_dir}"], base / "reference.log")[0] == 0, \
        (base / "reference.log").read_text()
    return run_dir


def test_each_group_signal_checkpoints_and_the_run_resumes_exactly(reference, tmp_path):
    run_dir = tmp_path / "run"
    for signum in SIGNALS:
        stopped = stop_group(ARGV, run_dir, signum, tmp_path / f"stop-{signum.name}.log")
        assert stopped.problems == [], signum.name
        assert stopped.error.startswith(f"stopped by {signum.name} ("), stopped.error
    assert resume_and_compare(ARGV, run_dir, reference, tmp_path / "resume.log") == []
