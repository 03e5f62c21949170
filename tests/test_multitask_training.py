"""Learned task weighting and single-task runs end to end, through ``mtl-train`` subprocesses on the tiny
synthetic dataset: a run killed with SIGKILL and resumed ends bitwise as the unbroken run, the learned
weights included; a single-task run trains, validates and packs its own task alone."""

from __future__ import annotations

import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch

from faults.checks import weight_differences
from faults.launcher import start_train
from mtl.run.records import read_record
from mtl.run.summary import read_run_summary
from mtl.run.trace import read_trace
from support import forked_train, tiny_args

pytestmark = pytest.mark.slow

EPOCHS = 3  # DWA's weights move from the third epoch on: the kill lands there
STEPS_PER_EPOCH = 4  # 8 training images, batch 2


def run_train(log_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    result = forked_train(log_dir, *tiny_args(num_epochs=EPOCHS), *extra)
    assert result.returncode == 0, f"mtl-train exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def kill_in_third_epoch(log_dir: Path, *extra: str) -> dict:
    """Start the run with a checkpoint every step and SIGKILL it once last.pt is inside the third epoch;
    returns that checkpoint."""
    process = start_train([*tiny_args(num_epochs=EPOCHS), f"--log_dir={log_dir}", "--checkpoint_interval_steps=1",
                           *extra], log_dir.parent / f"{log_dir.name}.killed.log")
    last = log_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    state: dict = {}
    seen = None
    while time.time() < deadline and process.alive():
        try:
            stat = last.stat()
            # Each checkpoint is read once: loading 100 MB at every poll took the core the training needs.
            if (stat.st_ino, stat.st_mtime_ns) != seen:
                state = torch.load(last, map_location="cpu", weights_only=False)
                seen = (stat.st_ino, stat.st_mtime_ns)
        except (FileNotFoundError, RuntimeError, EOFError):  # not written yet
            state = {}
        if state.get("epoch") == EPOCHS - 1 and state.get("batch_in_epoch", 0) >= 1:
            break
        time.sleep(0.02)
    process.send(signal.SIGKILL)
    process.wait()
    assert state.get("epoch") == EPOCHS - 1, f"the run was not caught in its third epoch: {state.get('step')}"
    return state


def without_time(points: list[dict]) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "time"} for p in points]


def best_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("method", ["uncertainty", "dwa"])
def test_sigkill_and_resume_ends_bitwise_as_the_unbroken_run(method, tmp_path, cache_dir):
    reference, broken = tmp_path / "reference", tmp_path / "broken"
    run_train(reference, f"--loss_weighting={method}")
    state = kill_in_third_epoch(broken, f"--loss_weighting={method}")
    assert state["weighting"]["method"] == method  # the learned state travels in the checkpoint
    resumed = run_train(broken, f"--loss_weighting={method}")
    assert f"resuming from step {state['step']} (epoch {EPOCHS}/{EPOCHS}" in resumed.stdout
    trace = read_trace(broken / "metrics.jsonl")
    assert without_time(trace) == without_time(read_trace(reference / "metrics.jsonl"))
    best = Path("checkpoints") / "best.pt"
    assert weight_differences(broken / best, reference / best) == []
    # The learned weights moved (else resuming them would prove nothing) and are logged at each point.
    third = [p for p in trace if "train/loss" in p and p["epoch"] == EPOCHS]
    assert third and all(p["train/weight_semseg"] != 0.5 and p["train/weight_depth"] != 0.5 for p in third)
    if method == "uncertainty":
        assert all(p["train/log_variance_semseg"] != 0.0 for p in third)


def test_a_single_task_run_trains_validates_and_packs_its_task_alone(tmp_path, cache_dir):
    log_dir = tmp_path / "depth"
    result = run_train(log_dir, "--tasks=depth", "--num_epochs=2")
    record = read_record(log_dir)  # the records agree: the best point is in the trace without a grader
    points = record.points
    assert len(points) == 2 and all(p["val/grader"] is None and "val/iou" not in p for p in points)
    best = min(points, key=lambda p: p["val/si_logrmse"])  # lower is better
    assert (record.status.best.step, record.status.best.si_logrmse) == (best["step"], best["val/si_logrmse"])
    assert read_run_summary(log_dir).best == best
    assert f"best SI-logRMSE {best['val/si_logrmse']:.2f} (single-task: grader not defined)" in result.stdout
    training = [p for p in read_trace(log_dir / "metrics.jsonl") if "train/loss" in p]
    assert all("train/loss_semseg" not in p and p["train/loss"] == pytest.approx(0.5 * p["train/loss_depth"])
               for p in training)
    with zipfile.ZipFile(log_dir / "submission.zip") as archive:
        names = archive.namelist()
    assert sum(n.startswith("predictions/depth/") for n in names) == 4
    assert not any(n.startswith("predictions/semseg/") for n in names)
    assert best_weights(log_dir)["decoder.features_to_predictions.weight"].shape[0] == 1  # one head: depth
