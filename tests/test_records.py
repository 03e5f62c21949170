"""A run's records are the truth: a finished run is never trained again, what is lost is rebuilt from
what remains (each step named), what cannot be is refused naming the file, and checkpoints agree with
the trace whatever instant a kill lands. Real ``mtl-train`` / ``mtl-ablate`` subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from faults.records import kill_after_write
from mtl.run import layout as rundir
from mtl.run.errors import RecordError
from mtl.run.model import ExitCode, RunState
from mtl.run.records import read_record, read_status
from mtl.run.trace import read_trace
from support import REPO, TINY, ablate_here, forked_train, tiny_args

pytestmark = pytest.mark.slow


def mtl_train(log_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return forked_train(log_dir, *tiny_args(), *extra)


def checked(result: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert result.returncode == code, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def snapshot(run_dir: Path) -> dict[str, bytes]:
    run = rundir.RunDirectory(run_dir)
    return {"metrics": run.metrics.read_bytes(), "best": run.best.read_bytes()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir) -> Path:
    """A finished tiny run, copied by each test that damages it."""
    log_dir = tmp_path_factory.mktemp("records") / "base"
    checked(mtl_train(log_dir))
    return log_dir


def damaged_copy(finished: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns(".lock"))
    return run_dir


def test_config_yaml_does_not_record_the_run_directory(finished):
    assert "log_dir" not in yaml.safe_load((finished / rundir.CONFIG_FILE).read_text())


def test_lost_last_checkpoint_and_emptied_status_are_rebuilt_not_retrained(finished, tmp_path):
    run_dir = damaged_copy(finished, tmp_path)
    before = snapshot(run_dir)
    original = json.loads((run_dir / rundir.STATUS_FILE).read_text())
    run = rundir.RunDirectory(run_dir)
    run.last.unlink(missing_ok=True)  # a finished run may have dropped it already
    run.status_path.write_text("")
    result = checked(mtl_train(run_dir))
    assert "rebuilding status.json" in result.stderr
    assert snapshot(run_dir) == before
    status = json.loads(run.status_path.read_text())
    for key in ("state", "epoch", "step", "best", "num_epochs", "config_hash"):
        assert status[key] == original[key], key


def test_lost_submission_is_rebuilt_from_best_checkpoint(finished, tmp_path):
    run_dir = damaged_copy(finished, tmp_path)
    before = snapshot(run_dir)
    run = rundir.RunDirectory(run_dir)
    run.last.unlink(missing_ok=True)  # a finished run may have dropped it already
    run.submission.unlink()
    result = checked(mtl_train(run_dir))
    assert "rebuilding submission.zip from checkpoints/best.pt" in result.stderr
    assert snapshot(run_dir) == before and run.submission.exists()


def test_lost_best_checkpoint_is_refused_naming_it(finished, tmp_path):
    run_dir = damaged_copy(finished, tmp_path)
    run = rundir.RunDirectory(run_dir)
    run.best.unlink()
    run.submission.unlink()
    metrics = run.metrics.read_bytes()
    result = checked(mtl_train(run_dir), ExitCode.REFUSED)
    assert f"{run.best} is missing" in result.stderr
    assert run.metrics.read_bytes() == metrics
    assert read_status(run_dir).state is RunState.FINISHED


def test_changed_dataset_is_refused_on_resume(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    killed = forked_train(run_dir, *tiny_args(), setup=kill_after_write("best.pt"))  # killed after epoch 1 of 2
    assert killed.returncode == 9, killed.stderr
    run = rundir.RunDirectory(run_dir)
    state = torch.load(run.last, weights_only=False)
    state["dataset"] = "0" * 16
    torch.save(state, run.last)
    result = checked(forked_train(run_dir, *tiny_args()), ExitCode.REFUSED)
    assert "changed since this run started" in result.stderr


@pytest.mark.parametrize("killed_after", ["last.pt", "best.pt"])
def test_kill_between_checkpoint_writes_leaves_records_that_agree(killed_after, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    killed = forked_train(run_dir, *tiny_args(num_epochs=1), setup=kill_after_write(killed_after))
    assert killed.returncode == 9, killed.stderr
    run = rundir.RunDirectory(run_dir)
    assert (killed_after == "best.pt") == run.best.exists()  # last.pt is written first
    result = checked(forked_train(run_dir, *tiny_args(num_epochs=1)))
    if killed_after == "last.pt":
        assert "rebuilding checkpoints/best.pt from checkpoints/last.pt" in result.stderr
    status = read_record(run_dir).status  # the one reader checks its best point against the trace
    best = torch.load(run.best, weights_only=False)["best"]
    assert status.state is RunState.FINISHED and status.best.model_dump() == best


def test_damaged_records_are_named(finished, tmp_path):
    run_dir = damaged_copy(finished, tmp_path)
    run = rundir.RunDirectory(run_dir)
    lines = run.metrics.read_text().splitlines(keepends=True)
    run.metrics.write_text("".join(lines[:1] + ['{"step": 3, "val/gr\n'] + lines[1:]))
    with pytest.raises(RecordError, match=r"metrics.jsonl: line 2 is not valid JSON"):
        read_trace(run.metrics)
    run.metrics.write_text("".join(lines) + '{"step": 99, "val/grad')  # torn final line: ignored
    assert len(read_trace(run.metrics)) == len(lines)
    status_text = run.status_path.read_text()
    run.status_path.write_text("")
    with pytest.raises(RecordError, match=r"status.json: is empty"):
        read_status(run_dir)
    run.status_path.write_text(status_text)
    best_step = read_status(run_dir).best.step
    kept = [line for line in lines if f'"step": {best_step},' not in line]
    run.metrics.write_text("".join(kept))
    with pytest.raises(RecordError, match=r"holds no validation point at step"):
        read_record(run_dir)


def test_lock_held_creates_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert not rundir.lock_held(run_dir)
    assert not (run_dir / rundir.LOCK_FILE).exists()
    with rundir.RunDirectory(run_dir).exclusive():
        held = subprocess.run([sys.executable, "-c", "import sys; from mtl.run.layout import lock_held; "
                               "print(lock_held(sys.argv[1]))", str(run_dir)], cwd=REPO,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert held.stdout.strip() == "True", held.stderr
    assert not rundir.lock_held(run_dir)


SUITE_PROFILE = {**{k: v for k, v in TINY.items() if k != "num_threads"},
                 "synthetic_num_train": 4, "synthetic_num_val": 2, "synthetic_num_test": 2, "synthetic_width": 64}


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_suite_rebuilds_repairs_and_reads_a_read_only_runs_folder(tmp_path, cache_dir, capsys):
    from mtl.ablate.entry import load_entries
    from mtl.ablate.planner import make_plan

    ablations, runs_dir = tmp_path / "ablations", tmp_path / "runs"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(SUITE_PROFILE))
    (ablations / "problem1.rec.yaml").write_text(yaml.safe_dump({"question": "Kept?", "item": "1.1", "base": "tiny"}))
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(runs_dir)]
    # mtl-ablate in this process (what it reads and writes is under test); its training is a process of its own.
    checked(ablate_here(capsys, "run", "problem1.rec", *where, "--devices", "cpu"))
    (spec,) = make_plan(load_entries(ablations)["problem1.rec"], None, runs_dir).runs
    run = rundir.RunDirectory(spec.run_dir)
    before, original = snapshot(run.path), json.loads(run.status_path.read_text())

    # Finished means finished: last.pt lost, status emptied -> rebuilt by `run`, nothing trained again.
    run.last.unlink(missing_ok=True)  # a finished run may have dropped it already
    run.status_path.write_text("")
    status_out = checked(ablate_here(capsys, "status", "problem1.rec", *where)).stdout
    assert "status.json:isempty" in "".join(status_out.replace("│", "").split())  # folded in its table cell
    checked(ablate_here(capsys, "run", "problem1.rec", *where, "--devices", "cpu"))
    assert snapshot(run.path) == before
    restored = json.loads(run.status_path.read_text())
    assert {k: restored[k] for k in ("state", "step", "best")} == {k: original[k] for k in ("state", "step", "best")}
    assert "rebuilding status.json" in rundir.log_path(run.path).read_text()

    # A lost submission: `repair` rebuilds it from best.pt, naming the step.
    run.submission.unlink()
    repaired = checked(ablate_here(capsys, "repair", "problem1.rec", *where)).stdout
    assert "rebuilding submission.zip from checkpoints/best.pt" in repaired and run.submission.exists()
    assert snapshot(run.path) == before

    # Read commands on a read-only runs folder: they create nothing (no lock file either).
    run.lock_path.unlink()
    listing = tree(runs_dir)
    subprocess.run(["chmod", "-R", "a-w", str(runs_dir)], check=True)
    try:
        for command in (["show", "problem1.rec"], ["status"], ["list"], ["run", "problem1.rec", "--dry-run"],
                        ["report", "problem1.rec", "--no-figures", "--out", str(tmp_path / "report")]):
            checked(ablate_here(capsys, *command, *where))
        assert tree(runs_dir) == listing
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(runs_dir)], check=True)
