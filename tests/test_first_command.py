"""The first command, as a new user types it: ``mtl-ablate run problem1.lr`` in a fresh clone without MiniScapes.

It plans the ``full`` profile (MiniScapes at data/miniscapes, for a GPU). Before anything starts, the
pre-flight finds the dataset missing and refuses at once -- no training, no run directory, nothing recorded
``failed`` -- saying the ways forward: point at the data (``--dataset-root`` or $MTL_DATASET_ROOT, neither of
which changes a run's identity), ``--profile quick`` on the embedded data, and what the plan would take on
this CPU. ``mtl-train`` itself refuses a missing dataset folder before it writes anything (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtl.ablate import preflight
from mtl.ablate.entry import load_entries
from mtl.ablate.planner import make_plan
from mtl.config import make_config
from mtl.data.synthetic import SyntheticParams, build_synthetic
from mtl.run.layout import DATASET_ROOT_ENV, RunDirectory
from mtl.run.records import read_record
from mtl.suite import main
from support import ABLATIONS, REPO, SUITE_PROFILE, tiny_ablations, train_command, write_tiny_entry


def fresh_environment(**extra: str) -> dict[str, str]:
    """What a new user's shell has: no runs or ablations folder set, no GPU, no dataset root."""
    env = {k: v for k, v in os.environ.items() if k not in ("MTL_RUNS_DIR", "MTL_ABLATIONS_DIR", DATASET_ROOT_ENV)}
    return {**env, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", **extra}


def test_the_first_command_without_miniscapes_refuses_at_once_and_says_the_ways_forward(tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mtl.suite", "run", "problem1.lr"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=fresh_environment())
    elapsed = time.monotonic() - started
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    err = " ".join(result.stderr.split())
    for said in ("cannot run problem1.lr here under profile full; nothing was started",
                 f"'data/miniscapes' ({tmp_path / 'data' / 'miniscapes'}), which is not a folder",
                 "`mtl-ablate run problem1.lr --dataset-root DIR`", f"{DATASET_ROOT_ENV}=DIR",
                 "`mtl-ablate run problem1.lr --profile quick`",
                 "this one has none, and on its CPU the plan would take about"):
        assert said in err, (said, result.stderr)
    assert list(tmp_path.iterdir()) == []  # no runs/, no log, no failed run
    assert elapsed < 120, elapsed  # seconds of planning and one timed pass, never a training


def test_mtl_train_refuses_a_missing_dataset_folder_before_writing_anything(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(train_command("--dataset=miniscapes", f"--dataset_root={tmp_path / 'nowhere'}",
                                          f"--log_dir={run_dir}", "--wandb_mode=disabled"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=fresh_environment())
    assert result.returncode == 2, result.stderr
    assert "which is not a folder" in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_a_dataset_folder_without_its_splits_is_named_with_what_is_missing(tmp_path):
    (tmp_path / "ms" / "train").mkdir(parents=True)
    from mtl.data import dataset_problem

    problem = dataset_problem(make_config(dataset="miniscapes", dataset_root=str(tmp_path / "ms")))
    assert problem is not None and "has no val/, test/" in problem and str(tmp_path / "ms") in problem


def test_the_dataset_root_override_changes_no_run_identity(tmp_path, monkeypatch):
    entry = load_entries(ABLATIONS)["problem1.optimizer"]
    plain = make_plan(entry, "full", tmp_path / "runs")
    monkeypatch.setenv(DATASET_ROOT_ENV, str(tmp_path / "elsewhere"))
    moved = make_plan(entry, "full", tmp_path / "runs")
    assert [run.run_dir for run in moved.runs] == [run.run_dir for run in plain.runs]
    assert {run.config.dataset_root for run in moved.runs} == {str(tmp_path / "elsewhere")}
    assert {run.config.dataset_root for run in plain.runs} == {"data/miniscapes"}
    quick = make_plan(entry, "quick", tmp_path / "runs")  # a synthetic profile is not pointed anywhere
    assert {run.config.dataset_root for run in quick.runs} == {None}


def test_a_gpu_the_machine_lacks_is_refused_before_anything_is_written(tmp_path, capsys, cache_dir):
    ablations = tiny_ablations(tmp_path / "ablations")
    write_tiny_entry(ablations, "problem1.gpu")
    args = ["run", "problem1.gpu", "--devices", "7", "--ablations-dir", str(ablations), "--runs-dir",
            str(tmp_path / "runs")]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--devices names GPU 7, but this machine has" in err and "--devices cpu`" in err, err
    assert not (tmp_path / "runs").exists()


def test_unavailable_weights_are_said_before_the_run_is_recorded_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there
    ablations = tiny_ablations(tmp_path / "ablations")
    write_tiny_entry(ablations, "problem1.init", grid={"pretrained": [False, True]})
    plan = make_plan(load_entries(ablations)["problem1.init"], "tiny", tmp_path / "runs")
    (note,) = preflight.weights_notes(plan.runs)
    assert note.startswith("problem1.init pretrained=true s0: the ImageNet weights are not at")
    assert "MTL_OFFLINE is set: recorded as skipped" in note


def test_the_estimate_uses_the_speed_this_machine_recorded_for_the_same_model(tmp_path):
    ablations = tiny_ablations(tmp_path / "ablations")
    write_tiny_entry(ablations, "problem1.cost", grid={"optimizer_lr": [0.01, 0.02]})
    runs_dir = tmp_path / "runs"
    first, second = make_plan(load_entries(ablations)["problem1.cost"], "tiny", runs_dir).runs
    # first finished here: 40 steps of batch 2 at crop 64 in 80 s
    run = RunDirectory(first.run_dir)
    first.run_dir.mkdir(parents=True)
    run.config_path.write_text(first.config.to_yaml(exclude=("log_dir",)))
    run.status_path.write_text(json.dumps({"state": "finished", "step": 40, "elapsed_s": 80.0,
                                           "config_hash": first.config.config_hash()}))
    found = preflight.estimate([second], threads=1, runs_dir=runs_dir)
    steps = SUITE_PROFILE["num_epochs"] * (SUITE_PROFILE["synthetic_num_train"] // SUITE_PROFILE["batch_size"])
    assert found.steps == steps
    assert found.seconds == pytest.approx(steps * 80.0 / 40)
    assert "at the speed of 1 finished run of the same model" in found.how
    timed = preflight.estimate([second], threads=1, runs_dir=tmp_path / "no-runs")
    assert timed.seconds > 0 and "timed here" in timed.how


@pytest.fixture(scope="module")
def miniscapes(tmp_path_factory) -> Path:
    """A small dataset in the MiniScapes layout, standing in for the real one."""
    params = SyntheticParams(num_train=4, num_val=2, num_test=2, height=SUITE_PROFILE["synthetic_height"],
                             width=SUITE_PROFILE["synthetic_width"])
    return build_synthetic(tmp_path_factory.mktemp("data") / "miniscapes", params)


@pytest.mark.slow
def test_dataset_root_points_a_miniscapes_profile_at_the_data_and_the_run_trains(tmp_path, miniscapes, capsys,
                                                                                 monkeypatch):
    ablations = tiny_ablations(tmp_path / "ablations")
    profile = {**SUITE_PROFILE, "dataset": "miniscapes", "dataset_root": "data/miniscapes", "num_epochs": 1}
    (ablations / "profiles" / "gpu.yaml").write_text(json.dumps(profile))
    write_tiny_entry(ablations, "problem1.data", base="gpu")
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(tmp_path / "runs"), "--devices", "cpu"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATASET_ROOT_ENV, "")  # unset; and restored after the test, which `--dataset-root` sets
    assert main(["run", "problem1.data", *where]) == 2  # data/miniscapes is not here
    assert "--dataset-root DIR" in capsys.readouterr().err
    monkeypatch.setattr(preflight, "LONG_PLAN_S", 0.0)  # say the CPU estimate even of this tiny plan
    assert main(["run", "problem1.data", "--dataset-root", str(miniscapes), *where]) == 0
    out = capsys.readouterr().out
    assert "problem1.data: training on this machine's CPU, about" in out, out
    (run,) = make_plan(load_entries(ablations)["problem1.data"], "gpu", tmp_path / "runs").runs
    record = read_record(run.run_dir)  # the run the plan names without the override: same identity
    assert record.state == "finished" and record.config["dataset_root"] == str(miniscapes)
