"""Records that check themselves, and --force that stays on the entries it names.

- A finished run's config.yaml must hash to the config_hash its status records: an edited one is refused
  by every reader (report, show, best of, run, repair), naming both files and how to fork a new run.
- A finished run counts as finished, and is shipped, only with the submission.zip it packed: a truncated or
  padded one is rebuilt by ``run`` and ``repair`` from best.pt (the damaged one kept aside) and refused by
  ``export``.
- A prerequisite run that failed is named wherever its entry's ``best of`` is shown.
- ``run ENTRY --force`` deletes ENTRY's runs only; a prerequisite's runs go only when it is named too.

Entries: ``t.opt`` (variants sgd and adam) and ``t.next`` (``best of t.opt``, an lr grid), as in the issue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtl.ablate.entry import load_entries
from mtl.ablate.planner import RunSpec, make_plan
from mtl.run.errors import RecordError
from mtl.run.layout import RunDirectory, remember_profile
from mtl.run.records import read_config, read_record
from mtl.suite import main
from planting import placeholder_submission
from support import REPO, tiny_ablations, write_tiny_entry


@pytest.fixture
def project(tmp_path, cache_dir) -> dict[str, Path]:
    ablations = tiny_ablations(tmp_path / "ablations")
    write_tiny_entry(ablations, "t.opt", item="1.1", overrides={"num_epochs": 1},
                     variants=[{"name": "sgd", "overrides": {"optimizer": "sgd"}},
                               {"name": "adam", "overrides": {"optimizer": "adam", "optimizer_lr": 0.001}}])
    write_tiny_entry(ablations, "t.next", item="1.2", base="best of t.opt",
                     grid={"optimizer_lr": [{"times": 1}, {"times": 2}]})
    return {"ablations": ablations, "runs": tmp_path / "runs", "tmp": tmp_path}


def where(project: dict[str, Path]) -> list[str]:
    return ["--ablations-dir", str(project["ablations"]), "--runs-dir", str(project["runs"])]


def opt_runs(project: dict[str, Path]) -> dict[str, RunSpec]:
    plan = make_plan(load_entries(project["ablations"])["t.opt"], "tiny", project["runs"])
    return {run.variant: run for run in plan.runs}


def plant_finished(spec: RunSpec, grader: float, state: str = "finished") -> None:
    """A run as its trainer leaves it (config, trace, status with config_hash and the packed submission's
    digest), without training."""
    run = RunDirectory(spec.run_dir)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    run.config_path.write_text(spec.config.to_yaml(exclude=("log_dir",)))
    point = {"step": 2, "epoch": 1, "time": 1.0, "val/grader": grader, "val/iou": 50.0, "val/si_logrmse": 30.0}
    run.metrics.write_text(json.dumps(point) + "\n")
    best = {"step": 2, "epoch": 1, "grader": grader, "iou": 50.0, "si_logrmse": 30.0}
    status = {"state": state, "epoch": 1, "num_epochs": 1, "step": 2, "config_hash": spec.config.config_hash(),
              "best": best if state == "finished" else None, "error": None if state == "finished" else "OSError: "
              "[Errno 28] No space left on device: '/data/runs/x/last.pt'"}
    if state == "finished":
        status["submission"] = placeholder_submission(spec.run_dir).model_dump()
    run.status_path.write_text(json.dumps(status))
    remember_profile(spec.run_dir.parent, "tiny")


def plant_opt(project: dict[str, Path], sgd_state: str = "finished") -> dict[str, RunSpec]:
    runs = opt_runs(project)
    plant_finished(runs["sgd"], 5.0, sgd_state)
    plant_finished(runs["adam"], 9.0)
    return runs


def no_traceback(capsys) -> tuple[str, str]:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return out, err


# ------------------------------------------------------------------------------------------ config hash
def edit_config(run_dir: Path) -> None:
    path = RunDirectory(run_dir).config_path
    values = yaml.safe_load(path.read_text())
    values.update(optimizer_lr=0.3, num_epochs=3)
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def test_an_edited_config_is_refused_by_the_reader_naming_both_files_and_how_to_fork(project):
    runs = plant_opt(project)
    adam = runs["adam"].run_dir
    assert read_config(adam)["optimizer_lr"] == 0.001
    edit_config(adam)
    with pytest.raises(RecordError) as info:
        read_config(adam)
    message = str(info.value)
    for part in (str(RunDirectory(adam).config_path), str(RunDirectory(adam).status_path),
                 runs["adam"].config.config_hash(), "mtl-train --config COPY --log_dir NEW_FOLDER", "cmd.txt"):
        assert part in message, message


def test_every_command_refuses_an_edited_config(project, capsys):
    runs = plant_opt(project)
    edit_config(runs["adam"].run_dir)
    hash_ = runs["adam"].config.config_hash()
    out_dir = project["tmp"] / "reports"
    assert main(["report", "t.opt", "--no-figures", "--format", "csv", "--out", str(out_dir), *where(project)]) == 2
    assert hash_ in no_traceback(capsys)[1]
    assert main(["show", "t.next", *where(project)]) == 2  # its base, the winner, cannot be decided
    assert hash_ in no_traceback(capsys)[1]
    assert main(["run", "t.opt", "--devices", "cpu", *where(project)]) == 1  # refused, never trained
    out, _ = no_traceback(capsys)
    assert "refused" in out and hash_ in out
    assert main(["repair", "t.opt", *where(project)]) == 1
    out, _ = no_traceback(capsys)
    assert "cannot repair" in out and hash_ in out
    assert not any(out_dir.rglob("*.csv"))  # nothing written


# ------------------------------------------------------------------------------------------ failed base variant
def test_a_failed_prerequisite_is_named_wherever_best_of_is_shown(project, capsys):
    plant_opt(project, sgd_state="failed")
    said = "'sgd' failed (seed 0"
    assert main(["show", "t.next", *where(project)]) == 0
    assert said in no_traceback(capsys)[0]
    assert main(["status", "t.next", *where(project)]) == 0
    assert said in no_traceback(capsys)[0]
    assert main(["run", "t.next", "--dry-run", *where(project)]) == 0
    assert said in no_traceback(capsys)[0]
    out_dir = project["tmp"] / "reports"
    report = ["report", "t.next", "--no-figures", "--format", "md", "--out", str(out_dir), *where(project)]
    assert main(report) in (0, 1)  # 1: t.next has no runs yet, a problem the report names
    no_traceback(capsys)
    writeup = (out_dir / "report.md").read_text()
    assert "the winner of t.opt was chosen without 'sgd' failed (seed 0" in writeup, writeup
    assert "No space left" not in writeup  # the error names local paths: the kind only
    assert main(["report", "t.next", "--ladder", "--out", str(out_dir), *where(project)]) == 0
    assert "chosen without 'sgd' failed" in no_traceback(capsys)[0]


# ------------------------------------------------------------------------------------------ --force
def test_force_leaves_a_prerequisites_runs_alone_unless_it_is_named(project, capsys):
    runs = plant_opt(project)
    assert main(["run", "t.next", "--force", "--dry-run", *where(project)]) == 0
    out = no_traceback(capsys)[0]
    opt_rows = [line for line in out.splitlines() if "sgd-s0-" in line or "adam-s0-" in line]
    assert opt_rows and all("skip (finished)" in row for row in opt_rows), out
    assert main(["run", "t.next", "t.opt", "--force", "--dry-run", *where(project)]) == 0
    opt_rows = [line for line in no_traceback(capsys)[0].splitlines() if "sgd-s0-" in line or "adam-s0-" in line]
    assert opt_rows and all("restart" in row for row in opt_rows)
    assert all(run.run_dir.is_dir() for run in runs.values())


@pytest.mark.slow
def test_run_force_trains_the_named_entry_and_keeps_the_prerequisites_finished_runs(project, capsys):
    runs = plant_opt(project)
    before = {name: sorted((p.name, p.stat().st_mtime_ns) for p in run.run_dir.iterdir())
              for name, run in runs.items()}
    assert main(["run", "t.next", "--force", "--devices", "cpu", *where(project)]) == 0
    out = no_traceback(capsys)[0]
    assert "--force does not reach t.opt: its runs are kept" in out
    assert {name: sorted((p.name, p.stat().st_mtime_ns) for p in run.run_dir.iterdir())
            for name, run in runs.items()} == before
    trained = [read_record(d) for d in (project["runs"] / "t.next").iterdir() if (d / "status.json").exists()]
    assert sorted(r.state for r in trained) == ["finished", "finished"]


# ------------------------------------------------------------------------------------------ submission.zip
@pytest.fixture
def trained(project, capsys) -> RunSpec:
    """t.opt's sgd run, trained for real (the trainer records the digest of the submission it packed)."""
    (project["ablations"] / "t.opt.yaml").write_text(yaml.safe_dump({
        "question": "q", "item": "1.1", "base": "tiny", "overrides": {"num_epochs": 1},
        "variants": [{"name": "sgd", "overrides": {"optimizer": "sgd"}}]}))
    assert main(["run", "t.opt", "--devices", "cpu", *where(project)]) == 0
    capsys.readouterr()
    (spec,) = opt_runs(project).values()
    assert read_record(spec.run_dir).status.submission is not None
    return spec


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


@pytest.mark.slow
@pytest.mark.parametrize("size", [0, "padded"])
def test_a_damaged_submission_is_rebuilt_by_run_refused_by_export_and_rebuilt_by_repair(project, trained, capsys,
                                                                                        size):
    run = RunDirectory(trained.run_dir)
    sound = run.submission.read_bytes()
    target = {0: 0, "padded": len(sound) + 50_000}[size]
    truncate(run.submission, target)
    damaged = run.submission.read_bytes()
    export_args = ["export", "t.opt", "--team", "t", "--no-figures", "--out", str(project["tmp"] / "out"),
                   *where(project)]
    assert main(export_args) == 2
    err = no_traceback(capsys)[1]
    assert "damaged archive" in err and "mtl-ablate repair t.opt" in err and str(run.submission) in err, err
    assert not (project["tmp"] / "out").exists() or not list((project["tmp"] / "out").iterdir())

    assert main(["run", "t.opt", "--devices", "cpu", *where(project)]) == 0
    out = no_traceback(capsys)[0]
    assert "rebuilding it from best.pt" in out, out
    assert run.submission.read_bytes() != damaged
    assert run.damaged_submission.read_bytes() == damaged  # kept aside, never deleted
    assert read_record(run.path).state == "finished"
    assert main(export_args) == 0
    no_traceback(capsys)

    truncate(run.submission, len(run.submission.read_bytes()) - 1)  # and once more, for repair
    assert main(["repair", "t.opt", *where(project)]) == 0
    out = no_traceback(capsys)[0]
    assert "moved to submission.damaged.zip" in out and "records agree" in out, out
    assert main(export_args) == 0


def test_no_traceback_reaches_the_user_of_a_subprocess_for_an_edited_config(project):
    """The same refusal from a real `mtl-ablate` process (what a user sees)."""
    runs = plant_opt(project)
    edit_config(runs["sgd"].run_dir)
    result = subprocess.run([sys.executable, "-m", "mtl.suite", "show", "t.next", *where(project)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert runs["sgd"].config.config_hash() in result.stderr
