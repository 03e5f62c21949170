"""The run that every fault is done to, and its uninterrupted reference.

Tiny on purpose: the shared TINY budget with four training images (two steps an epoch, two epochs),
so a whole run is a few seconds of work and each of its phases -- start-up, steps, mid-epoch and
epoch checkpoints, validation, predictions, submission.zip -- is a real target for a fault.
"""

from __future__ import annotations

from pathlib import Path

from faults.launcher import run_train, warm_up
from support import TINY

FAULT_CONFIG = {**TINY, "synthetic_num_train": 4, "synthetic_num_val": 2, "synthetic_num_test": 2,
                "synthetic_width": 64}
NUM_EPOCHS = FAULT_CONFIG["num_epochs"]


def fault_args(**overrides) -> list[str]:
    return [f"--{k}={v}" for k, v in {**FAULT_CONFIG, **overrides}.items()]


# With a checkpoint after every step, a fault anywhere loses at most one step of work.
FREQUENT_CHECKPOINTS = "--checkpoint_interval_steps=1"

_references: dict[Path, tuple[Path, float]] = {}


def reference_run(base: Path) -> tuple[Path, float]:
    """An uninterrupted run of the fault config (trained once per process and base folder) and its wall
    seconds: the span over which kill moments are drawn (it scales with how busy the machine is)."""
    if base not in _references:
        warm_up()
        reference = base / "reference"
        code, wall = run_train([*fault_args(), f"--log_dir={reference}"], base / "reference.log")
        if code != 0:
            raise RuntimeError(f"the reference run failed (exit {code}); see {base / 'reference.log'}")
        _references[base] = (reference, wall)
    return _references[base]
