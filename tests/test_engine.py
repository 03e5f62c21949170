"""End to end through ``mtl-train`` subprocesses on a tiny synthetic dataset."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from faults.checks import weight_differences
from faults.launcher import start_train
from mtl.run.model import ExitCode
from mtl.run.records import read_record
from mtl.run.summary import read_run_summary
from mtl.run.trace import read_trace
from mtl.train.submission import validate_submission
from support import REPO, forked_train, tiny_args, train_command

pytestmark = pytest.mark.slow


def run_train(log_dir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    result = forked_train(log_dir, *tiny_args(), *extra)
    if check and result.returncode != 0:
        raise AssertionError(f"mtl-train exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> Path:
    log_dir = tmp_path_factory.mktemp("runs") / "baseline"
    run_train(log_dir)
    return log_dir


def test_finished_run_has_every_contract_file(finished_run):
    for name in ("config.yaml", "status.json", "metrics.jsonl", "checkpoints/best.pt", "submission.zip",
                 "source.zip"):
        assert (finished_run / name).exists(), name
    # One checkpoint besides submission.zip: last.pt only served resuming, which a finished run never does.
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == ["best.pt"]
    # The trainer's latest progress record, which `mtl-ablate run` shows while the run trains.
    record = read_record(finished_run)
    progress = record.status.progress
    assert 1 <= progress.step <= progress.total_steps and progress.it_s > 0
    assert progress.loss is not None and progress.lr is not None and progress.eta_s is not None
    assert record.state == "finished"
    assert len(record.points) == 2
    best = record.best()
    assert record.status.best.grader == best["val/grader"] and record.status.best.step == best["step"]
    assert record.status.model.params > 1_000_000
    summary = read_run_summary(finished_run)  # what reports read instead of the trace
    assert summary.state == "finished" and summary.model == record.status.model
    assert summary.best == best and summary.final == record.points[-1]
    assert summary.validation.step == [p["step"] for p in record.points]
    assert yaml.safe_load((finished_run / "config.yaml").read_text())["num_epochs"] == 2


def test_submission_zip_structure_and_decodable_predictions(finished_run):
    path = finished_run / "submission.zip"
    assert validate_submission(path, test_indices=[0, 1, 2, 3]) == []
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for index in range(4):
            assert f"predictions/semseg/{index}.png" in names and f"predictions/depth/{index}.png" in names
        assert [n for n in names if n.startswith("checkpoints/")] == [f"checkpoints/{finished_run.name}.ckpt"]
        with zipfile.ZipFile(archive.open("source.zip")) as source:
            cmd = source.read("cmd.txt").decode()
            assert "mtl/train/engine.py" in source.namelist() and "mtl/run/layout.py" in source.namelist()
        assert "optimizer_lr: 0.01" in cmd and "log_dir" not in cmd and "workers" not in cmd
        header = archive.read("metrics.csv").decode().splitlines()[0]
        assert "val/grader" in header and "train/loss" in header


def test_submission_validation_reports_missing_members(finished_run, tmp_path):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(finished_run / "submission.zip") as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if name not in ("metrics.csv", "predictions/depth/2.png"):
                dst.writestr(name, src.read(name))
    problems = validate_submission(broken, test_indices=[0, 1, 2, 3])
    assert any("metrics.csv" in p for p in problems)
    assert any("predictions/depth lacks 1" in p for p in problems)


def test_finished_run_is_not_trained_again(finished_run):
    before = (finished_run / "metrics.jsonl").read_bytes()
    result = run_train(finished_run)
    assert f"mtl-train: finished {finished_run}: best grader" in result.stdout  # without last.pt too
    assert "resuming" not in result.stdout
    assert (finished_run / "metrics.jsonl").read_bytes() == before


def test_changed_hyperparameters_are_refused(finished_run):
    result = run_train(finished_run, "--optimizer_lr=0.02", check=False)
    assert result.returncode == 2
    assert "optimizer_lr" in result.stderr and "refusing" in result.stderr


def test_bad_config_exits_2_with_the_key(tmp_path, cache_dir):
    result = subprocess.run(train_command(f"--log_dir={tmp_path}", "--batch_sise=3"), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "did you mean 'batch_size'" in result.stderr


def assert_same_best_weights(run_dir: Path, reference: Path) -> None:
    """The best checkpoint's weights bit for bit: the one checkpoint a finished run keeps (the identical traces
    compared beside it cover the steps after it)."""
    best = Path("checkpoints") / "best.pt"
    assert weight_differences(run_dir / best, reference / best) == []


def test_resume_after_sigkill_mid_epoch_continues_from_last_checkpoint(finished_run, tmp_path):
    """Kill while epoch 2 trains; the restart resumes from the epoch-1 checkpoint and ends where an
    uninterrupted run ends (same trace, bitwise-equal weights)."""
    log_dir = tmp_path / "killed"
    args = tiny_args(limit_train_batches=0, num_epochs=2)
    process = start_train([*args, f"--log_dir={log_dir}", "--checkpoint_interval_steps=0"], tmp_path / "killed.log")
    last = log_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and process.alive():
        time.sleep(0.05)
    assert last.exists(), "no checkpoint appeared before the deadline"
    process.send(signal.SIGKILL)
    process.wait()
    epoch_at_kill = torch.load(last, weights_only=False)["epoch"]
    status = json.loads((log_dir / "status.json").read_text())
    assert status["state"] == "running"  # a SIGKILL leaves no chance to write anything else
    result = run_train(log_dir)
    assert result.returncode == 0
    resumed, reference = read_trace(log_dir / "metrics.jsonl"), read_trace(finished_run / "metrics.jsonl")
    if epoch_at_kill < 2:  # the kill came before the run finished: check that it did not start over
        assert [p["step"] for p in resumed] == [p["step"] for p in reference]
    strip = lambda points: [{k: v for k, v in p.items() if k != "time"} for p in points]  # noqa: E731
    assert strip(resumed) == strip(reference)
    assert_same_best_weights(log_dir, finished_run)
    assert read_run_summary(log_dir).validation == read_run_summary(finished_run).validation


def test_sigterm_checkpoints_mid_epoch_and_resumes_identically(finished_run, tmp_path):
    log_dir = tmp_path / "terminated"
    process = start_train([*tiny_args(), f"--log_dir={log_dir}"], tmp_path / "terminated.log")
    trace = log_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while not trace.exists() and time.time() < deadline and process.alive():
        time.sleep(0.02)
    process.send(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    state = torch.load(log_dir / "checkpoints" / "last.pt", weights_only=False)
    assert json.loads((log_dir / "status.json").read_text())["state"] == "interrupted"
    assert state["step"] >= 1
    resumed = run_train(log_dir)
    assert f"mtl-train: resuming from step {state['step']} (epoch {state['epoch'] + 1}/" in resumed.stdout
    # Plain progress lines, as torchvision's reference scripts print them: step, loss, lr, it/s, ETA.
    assert re.search(r"^epoch \d+/2 step \d+/\d+ loss \d+\.\d{4} lr \S+ it/s \d+\.\d\d eta \d+m\d\ds$",
                     resumed.stdout, re.MULTILINE), resumed.stdout
    assert_same_best_weights(log_dir, finished_run)
    resumed_best, reference_best = read_record(log_dir).best(), read_record(finished_run).best()
    np.testing.assert_allclose(resumed_best["val/grader"], reference_best["val/grader"])


def test_a_run_paused_at_a_rung_and_continued_is_the_run_never_paused(finished_run, tmp_path):
    """stop_after_epoch (a racing rung) pauses with the checkpoint kept; asked again with a later stop (0 =
    the full budget) the run continues bitwise as the uninterrupted one, the schedule being the full
    budget's from the start."""
    log_dir = tmp_path / "raced"
    paused = run_train(log_dir, "--stop_after_epoch=1", check=False)
    assert paused.returncode == ExitCode.PAUSED == 6, paused.stderr
    status = read_record(log_dir).status
    assert status.state == "paused" and status.epoch == 1 and (log_dir / "checkpoints" / "last.pt").exists()
    assert [p["epoch"] for p in read_record(log_dir).points] == [1]
    again = run_train(log_dir, "--stop_after_epoch=1", check=False)  # asked for the same rung: nothing trained
    assert again.returncode == 6 and "resuming from step" in again.stdout
    assert [p["epoch"] for p in read_record(log_dir).points] == [1]
    run_train(log_dir)  # the full budget
    assert read_record(log_dir).state == "finished"
    strip = lambda points: [{k: v for k, v in p.items() if k != "time"} for p in points]  # noqa: E731
    assert strip(read_trace(log_dir / "metrics.jsonl")) == strip(read_trace(finished_run / "metrics.jsonl"))
    assert_same_best_weights(log_dir, finished_run)
