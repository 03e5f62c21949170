"""``mtl-ablate run`` end to end with real ``mtl-train`` subprocesses on a tiny synthetic dataset.

One entry exercises everything a rerun must get right: a run that finishes, one that fails for real
(MiniScapes folders without an image) and one killed mid-training together with ``mtl-ablate``.
The scheduler's rules on their own (a lock held by another process, waiting, --force, stop signals,
exit codes) are tested against a fake backend in tests/test_scheduler.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mtl.ablate.display import Monitor, make_console
from mtl.ablate.entry import load_entries
from mtl.ablate.planner import plan
from mtl.ablate.scheduler import Scheduler, lock_held, log_path
from mtl.ablate.slurm import SlurmOptions, SubmititBackend
from mtl.run.records import read_record
from mtl.suite import main
from support import REPO, SUITE_PROFILE, tiny_ablations, wait_for_epoch
from support import write_tiny_entry as write_entry

pytestmark = pytest.mark.slow

# Smaller than the shared tiny budget: these tests start several trainings.
PROFILE = SUITE_PROFILE


@pytest.fixture
def ablations(tmp_path, cache_dir) -> Path:
    return tiny_ablations(tmp_path / "ablations")


def empty_miniscapes(root: Path) -> Path:
    """A MiniScapes layout without a single image: it passes the pre-flight (the folders are there) and fails
    the run for real when training reads it (an empty split)."""
    for split in ("train", "val", "test"):
        (root / split / "rgb").mkdir(parents=True)
    return root


def wait_until_released(run_dir: Path, timeout: float = 60) -> None:
    """A SIGKILLed mtl-train's lock goes away once the kernel has torn down all of its threads."""
    deadline = time.time() + timeout
    while lock_held(run_dir):
        if time.time() > deadline:
            pytest.fail(f"the lock of {run_dir} outlived the killed process")
        time.sleep(0.1)


def test_rerun_after_kill_and_failure(ablations, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    missing = empty_miniscapes(tmp_path / "no-miniscapes-here")
    write_entry(ablations, "problem1.mixed", overrides={"num_epochs": 2}, variants=[
        {"name": "first", "overrides": {}},
        {"name": "broken", "overrides": {"dataset": "miniscapes", "dataset_root": str(missing)}},
        {"name": "killed", "overrides": {"optimizer_lr": 0.005}},
    ])
    first, broken, killed = plan(load_entries(ablations)["problem1.mixed"], None, runs_dir)
    args = ["run", "problem1.mixed", "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir),
            "--devices", "cpu", "--jobs-per-device", "1"]
    # One slot, so the runs go in order; kill mtl-ablate and its training once "killed" checkpointed.
    process = subprocess.Popen([sys.executable, "-m", "mtl.suite", *args], cwd=REPO, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_epoch(killed.run_dir, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    wait_until_released(killed.run_dir)
    assert read_record(first.run_dir).state == "finished"
    failed = read_record(broken.run_dir)
    assert failed.state == "failed" and str(missing) in failed.status.error
    assert read_record(killed.run_dir).state == "running"  # as the kill left it

    metrics, first_log, broken_log = first.run_dir / "metrics.jsonl", log_path(first), log_path(broken)
    before = (metrics.stat().st_mtime_ns, metrics.read_bytes(), first_log.read_bytes(), broken_log.read_bytes())
    assert main(args) == 1  # "broken" stays failed
    out = capsys.readouterr().out
    # Finished run untouched, failed run not retried, killed run resumed to the end without repeating an epoch.
    assert (metrics.stat().st_mtime_ns, metrics.read_bytes(), first_log.read_bytes(),
            broken_log.read_bytes()) == before
    resumed = read_record(killed.run_dir)
    assert resumed.state == "finished", out
    assert [p["epoch"] for p in resumed.points] == [1, 2]
    assert "already finished" in out and "--retry-failed" in out
    # The results table: one row per run at its best-grader validation point.
    for run in (first, killed):
        best = read_record(run.run_dir).best()
        row = next(line for line in out.splitlines() if line.startswith(f"│ {run.variant} "))
        for value in (best["val/grader"], best["val/iou"], best["val/si_logrmse"]):
            assert f"{value:.2f}" in row, row
        assert f"optimizer_lr={run.config.optimizer_lr}" in row

    # --retry-failed retries "broken" (which fails again, for real, appending to its log); the rest stays.
    assert main([*args, "--retry-failed"]) == 1
    assert len(broken_log.read_bytes()) > len(before[3])
    assert read_record(broken.run_dir).state == "failed"
    assert metrics.read_bytes() == before[1]


def test_submitit_backend_reports_the_exit_of_the_same_command(ablations, tmp_path):
    """The SLURM path goes through submitit; its local executor runs the job on this machine."""
    runs_dir = tmp_path / "runs"
    missing = empty_miniscapes(tmp_path / "nothing")
    write_entry(ablations, "problem1.remote", overrides={"dataset": "miniscapes", "dataset_root": str(missing)})
    runs = plan(load_entries(ablations)["problem1.remote"], None, runs_dir)
    backend = SubmititBackend(tmp_path / "submitit", SlurmOptions(cpus_per_task=1, timeout_min=10), cluster="local")
    scheduler = Scheduler(backend, Monitor(make_console(), live=False), poll_interval=0.5)
    (outcome,) = scheduler.run(runs)
    assert (outcome.state, outcome.exit_code) == ("failed", 1)
    record = read_record(runs[0].run_dir)  # written by mtl-train inside the job
    assert record.state == "failed" and str(missing) in record.status.error
    assert record.config["num_threads"] == 1 and record.config["device"] == "cpu"


def test_ctrl_c_reaches_the_runs_as_sigint_and_the_rerun_resumes(ablations, tmp_path, capsys):
    """The scheduler forwards the signal it got: after Ctrl-C the run's status names SIGINT, not the
    SIGTERM a scheduler would otherwise send; the rerun resumes and says from where."""
    runs_dir = tmp_path / "runs"
    # Epochs enough that the forwarded signal lands mid-training on a fast idle machine (with 3, the run could
    # finish training before it arrived, and the rerun then rebuilt instead of resuming).
    write_entry(ablations, "problem1.stop", overrides={"num_epochs": 10})
    (run,) = plan(load_entries(ablations)["problem1.stop"], None, runs_dir)
    args = ["run", "problem1.stop", "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir), "--devices", "cpu"]
    # The training in a new interpreter here (--fresh-interpreters), forked from the server in the rerun.
    process = subprocess.Popen([sys.executable, "-m", "mtl.suite", *args, "--fresh-interpreters"], cwd=REPO,
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_epoch(run.run_dir, process)
        process.send_signal(signal.SIGINT)  # to mtl-ablate alone: the run hears of it only through the scheduler
        out, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 128 + signal.SIGINT, out
    stopped = read_record(run.run_dir)
    assert stopped.state == "interrupted" and stopped.status.error.startswith("stopped by SIGINT"), stopped.status
    capsys.readouterr()
    assert main(args) == 0
    assert read_record(run.run_dir).state == "finished"
    resumed = re.search(r"mtl-train: resuming from step (\d+) \(epoch (\d+)/10", log_path(run).read_text())
    assert resumed, log_path(run).read_text()
    # The suite's own output says it too, from the trainer's status.
    said = f"problem1.stop {run.variant} s0: resuming from step {resumed[1]} (epoch {resumed[2]}/10)"
    assert said in capsys.readouterr().out


def test_adhoc_grid_from_the_command_line_runs_and_reports_like_an_entry(ablations, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))
    runs_dir = tmp_path / "runs"
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(runs_dir)]
    # Values go through the Config schema, as in an entry file: a misspelt key is refused, nothing written.
    assert main(["run", "--grid", "optimzer_lr=0.1,0.01", "--name", "lr", *where, "--devices", "cpu"]) == 2
    assert "did you mean 'optimizer_lr'" in capsys.readouterr().err
    assert not (runs_dir / "adhoc.lr").exists()
    argv = ["run", "--grid", "optimizer_lr=0.02,0.005", "--set", "num_epochs=1", "--base", "tiny", "--name", "lr",
            *where, "--devices", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "adhoc.lr: 2 runs" in out and "optimizer_lr=0.02" in out and "optimizer_lr=0.005" in out
    saved = yaml.safe_load((runs_dir / "adhoc.lr" / "entry.yaml").read_text())
    assert saved["grid"] == {"optimizer_lr": [0.02, 0.005]} and saved["overrides"] == {"num_epochs": 1}
    assert not (ablations / "adhoc.lr.yaml").exists()  # only with --save
    runs = [child for child in (runs_dir / "adhoc.lr").iterdir() if (child / "status.json").exists()]
    assert sorted(read_record(run).state for run in runs) == ["finished", "finished"]
    assert main(["status", "adhoc.lr", *where]) == 0
    assert main(["report", "adhoc.lr", "--format", "csv", "--no-figures", "--out", str(tmp_path / "reports"),
                 *where]) == 0
    assert (tmp_path / "reports" / "tables" / "adhoc.lr.runs.csv").exists()
    # Run again: nothing to do, both runs are finished.
    assert main(argv) == 0 and "already finished" in capsys.readouterr().out


def test_run_trains_its_chain_reuses_same_configs_and_records_unavailable_weights(
        ablations, tmp_path, capsys, monkeypatch):
    """`run ENTRY` trains the entries its base needs first; a config that finished elsewhere is not trained
    again; a variant that needs ImageNet weights offline is recorded as skipped, and a base prescribing it
    takes the winner among the variants that ran instead, saying so."""
    monkeypatch.setenv("MTL_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", overrides={"num_epochs": 1},
                variants=[{"name": "x", "overrides": {"optimizer_lr": 0.01}},
                          {"name": "y", "overrides": {"optimizer_lr": 0.02}}])
    # {times: 1} of a's winner is a's winning run itself.
    write_entry(ablations, "problem1.b", item="1.2", base="best of problem1.a",
                grid={"optimizer_lr": [{"times": 1}, {"times": 0.5}]})
    # pretrained=false on a's x is a's x; pretrained=true cannot run offline.
    write_entry(ablations, "problem1.pre", item="1.3", base="problem1.a variant x", grid={"pretrained": [False, True]})
    write_entry(ablations, "problem1.after", item="1.4", base="problem1.pre variant pretrained=true")
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(runs_dir), "--devices", "cpu"]

    assert main(["run", "problem1.b", "--profile", "tiny", *where]) == 0
    out = capsys.readouterr().out
    assert "problem1.b needs problem1.a: training it first" in out
    assert "same config as problem1.a/" in out
    trained = {p.parent.name + "/" + p.name for p in runs_dir.glob("*/*-s0-*")}
    assert len([t for t in trained if t.startswith("problem1.a/")]) == 2
    assert len([t for t in trained if t.startswith("problem1.b/")]) == 1  # the other is a's run, reused

    # The profile is remembered: status without --profile reads the tiny runs.
    assert main(["status", "problem1.b", *where[:4]]) == 0
    out = capsys.readouterr().out
    assert "tiny profile" in out and "same as problem1.a/" in out and "not run" not in out

    assert main(["run", "problem1.pre", "--profile", "tiny", *where]) == 0  # skipped is not a failure
    out = capsys.readouterr().out
    assert "skipped" in out and "MTL_OFFLINE" in out
    skipped = next(runs_dir.glob("problem1.pre/pretrained=true-s0-*"))
    assert read_record(skipped).state == "skipped" and "MTL_OFFLINE" in read_record(skipped).status.error

    # The prescribed variant could not run: the winner among those that ran stands in, and the plan says so;
    # here that is problem1.a's x itself, so nothing trains.
    assert main(["run", "problem1.after", "--profile", "tiny", *where]) == 0
    out = capsys.readouterr().out
    assert "variant 'pretrained=true' was skipped on this machine (PretrainedWeightsUnavailable" in out
    assert "the winner among the variants that ran, 'pretrained=false'" in out and "same config as problem1.a/" in out
    assert not list(runs_dir.glob("problem1.after/*-s0-*"))
