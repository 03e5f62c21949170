"""Preemption: ``mtl-train`` killed with SIGKILL or stopped with SIGTERM at random moments, and restarted.

After every kill each file of the run directory must open as its reader opens it, and every run must
end exactly as an uninterrupted run of the same seed: same best grader and step, same metric trace,
bit-identical final and best weights. ``MTL_FAULT_TRIALS`` (default 6) sets the number of SIGKILLs,
``MTL_FAULT_SIGTERM_TRIALS`` (default 3) the number of SIGTERMs, ``MTL_FAULT_SEED`` the kill moments (drawn
afresh in each run of the suite; ``bench/fault_tally.py`` kills 10 of each by default, 50 with
``MTL_FAULT_TRIALS=50``).
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter

import pytest

from faults.preemption import preempt
from faults.runs import FREQUENT_CHECKPOINTS, NUM_EPOCHS, fault_args, reference_run

pytestmark = pytest.mark.slow

SIGKILL_TRIALS = int(os.environ.get("MTL_FAULT_TRIALS", "6"))
SIGTERM_TRIALS = int(os.environ.get("MTL_FAULT_SIGTERM_TRIALS", "3"))
SEED = int(os.environ.get("MTL_FAULT_SEED", random.SystemRandom().randrange(2**31)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    base = tmp_path_factory.getbasetemp() / "fault-reference"
    base.mkdir(exist_ok=True)
    return reference_run(base)


def _verdict(chains) -> tuple[list, list[str], str]:
    kills = [kill for chain in chains for kill in chain.kills]
    problems = [p for chain in chains for p in chain.problems + chain.differences]
    summary = (f"seed {SEED} (MTL_FAULT_SEED): {len(kills)} signals over {len(chains)} runs; phases "
               f"{dict(Counter(k.phase for k in kills))}; exits {dict(Counter(k.exit_code for k in kills))}")
    return kills, problems, summary


def test_sigkill_at_random_moments_loses_nothing(reference, tmp_path):
    reference_dir, wall_s = reference
    chains = preempt([*fault_args(), FREQUENT_CHECKPOINTS], tmp_path, reference_dir, signal.SIGKILL,
                     SIGKILL_TRIALS, SEED, max_delay_s=wall_s, num_epochs=NUM_EPOCHS)
    kills, problems, summary = _verdict(chains)
    assert problems == [], summary
    assert len(kills) == SIGKILL_TRIALS, summary
    assert sum(chain.files_checked for chain in chains) > len(kills), summary


def test_sigterm_at_random_moments_checkpoints_and_resumes_exactly(reference, tmp_path):
    reference_dir, wall_s = reference
    chains = preempt([*fault_args(), FREQUENT_CHECKPOINTS], tmp_path, reference_dir, signal.SIGTERM,
                     SIGTERM_TRIALS, SEED + 1, max_delay_s=wall_s, num_epochs=NUM_EPOCHS)
    kills, problems, summary = _verdict(chains)
    assert problems == [], summary  # includes: exit 143 always comes with state "interrupted" and last.pt
    assert len(kills) == SIGTERM_TRIALS, summary
