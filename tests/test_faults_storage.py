"""Storage faults: a checkpoint, trace, status or archive write that fails as on a full disk.

The failed write must leave the previous checkpoint and the trace readable, the run marked failed with
a reason that names the file, and no temporary file behind; started again on a healthy disk, the run
ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import json

import pytest
import torch

from faults.checks import check_run_dir, run_differences
from faults.launcher import run_train
from faults.runs import FREQUENT_CHECKPOINTS, fault_args, reference_run
from faults.storage import fail_write, fail_write_holding, limit_file_size
from mtl.run.trace import read_trace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    base = tmp_path_factory.getbasetemp() / "fault-reference"
    base.mkdir(exist_ok=True)
    return reference_run(base)[0]


def _train(run_dir, setup=None) -> int:
    code, _ = run_train([*fault_args(), FREQUENT_CHECKPOINTS, f"--log_dir={run_dir}"], run_dir.parent / "train.log",
                        setup=setup)
    return code


def _status(run_dir) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def _assert_intact_and_failed(run_dir, *words):
    status = _status(run_dir)
    assert status["state"] == "failed", status
    for word in words:
        assert word in status["error"], status["error"]
    check = check_run_dir(run_dir)
    assert check.problems == [] and check.temporaries == [], (check.problems, check.temporaries)
    return status


# Steps 1..4 (two an epoch) checkpoint after each step: last.pt is written at steps 1, 2, 3 and 4; the
# trace gets a training point and a validation point at steps 2 and 4.
@pytest.mark.parametrize("target, occurrence, kept_step", [
    ("last.pt", 3, 2),        # the mid-epoch checkpoint of step 3: the epoch-1 checkpoint stays
    ("metrics.jsonl", 3, 3),  # the training point of step 4, torn half-way: the trace still reads
    ("submission.zip", 1, 4),  # the very end: only predicting and packing are left to do
])
def test_a_full_disk_keeps_the_previous_checkpoint_and_the_run_resumes_exactly(reference, tmp_path, target,
                                                                               occurrence, kept_step):
    run_dir = tmp_path / "run"
    assert _train(run_dir, fail_write(target, occurrence)) == 1
    _assert_intact_and_failed(run_dir, "No space left on device", target)
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["step"] == kept_step
    trace_before = read_trace(run_dir / "metrics.jsonl")
    if target == "metrics.jsonl":  # the torn half line is not a point; everything before it is
        assert not (run_dir / "metrics.jsonl").read_text().endswith("\n")
        assert [p["step"] for p in trace_before] == [2, 2]

    assert _train(run_dir) == 0
    assert run_differences(run_dir, reference) == []
    if target == "submission.zip":  # nothing was trained again
        assert read_trace(run_dir / "metrics.jsonl") == trace_before


def test_a_failed_status_write_is_recorded_by_the_next_one(tmp_path, cache_dir):
    # The status write at the end of epoch 1 (top-level "epoch": 1) fails; progress records before it come
    # and go with the clock, so the write is found by what it holds, not by how many came before it.
    run_dir = tmp_path / "run"
    assert _train(run_dir, fail_write_holding("status.json", b'\n  "epoch": 1,')) == 1
    status = _assert_intact_and_failed(run_dir, "No space left on device", "status.json")
    assert status["epoch"] == 0  # the epoch-1 status never landed ...
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 1  # ... its checkpoint did


def test_a_file_size_limit_fails_the_first_checkpoint_cleanly(tmp_path, cache_dir):
    """The kernel's own refusal (RLIMIT_FSIZE, EFBIG): the 170 MB checkpoint cannot be written at all."""
    run_dir = tmp_path / "run"
    assert _train(run_dir, limit_file_size(100 * 2**20)) == 1
    _assert_intact_and_failed(run_dir, "File too large", "last.pt")
    assert not (run_dir / "checkpoints" / "last.pt").exists()
