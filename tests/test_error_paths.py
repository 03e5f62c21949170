"""One error path for what is not a run's fault: a folder flag that names a file, and a full disk, each said in
one line without a traceback; and a bug, which still prints its traceback, with the log file that keeps it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mtl.run.io
from faults.storage import _FullDiskFile, _OsWithFullDisk
from mtl.ablate import cli
from mtl.suite import main
from support import REPO, tiny_ablations, write_tiny_entry
from test_report_export import _plant, _write_entries


@pytest.fixture
def project(tmp_path) -> dict[str, Path]:
    ablations = tiny_ablations(tmp_path / "ablations")
    write_tiny_entry(ablations, "t.opt")
    return {"ablations": ablations, "tmp": tmp_path}


def without_traceback(capsys) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return " ".join(err.split())


@pytest.mark.parametrize("command", [["status"], ["list"], ["show", "t.opt"], ["run", "t.opt", "--devices", "cpu"],
                                     ["repair", "t.opt"], ["report", "t.opt"], ["export", "--team", "t"]])
@pytest.mark.parametrize("runs", ["a file", "below a file"])
def test_a_runs_dir_that_is_a_file_is_refused_naming_the_flag(project, capsys, command, runs):
    target = project["tmp"] / "runs-file"
    target.write_text("not a folder\n")
    runs_dir = target if runs == "a file" else target / "runs"
    before = sorted(project["tmp"].rglob("*"))
    assert main([*command, "--runs-dir", str(runs_dir), "--ablations-dir", str(project["ablations"])]) == 2
    err = without_traceback(capsys)
    assert f"--runs-dir {runs_dir} " in err and "expected a folder" in err, err
    assert sorted(project["tmp"].rglob("*")) == before


def test_export_out_that_is_a_file_is_refused(project, capsys):
    out = project["tmp"] / "out-file"
    out.write_text("")
    assert main(["export", "--team", "t", "--out", str(out), "--ablations-dir", str(project["ablations"]),
                 "--runs-dir", str(project["tmp"] / "runs")]) == 2
    assert f"--out {out} is a file" in without_traceback(capsys)


def test_a_process_sees_one_line_for_a_file_as_runs_dir(project):
    (project["tmp"] / "runs").write_text("")
    result = subprocess.run([sys.executable, "-m", "mtl.suite", "status", "--runs-dir", "runs", "--ablations-dir",
                             str(project["ablations"])], cwd=project["tmp"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == ("mtl-ablate: --runs-dir runs is a file; expected a folder (or a path where one "
                                     "can be made)")


def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    ablations = _write_entries(tmp_path / "ablations")
    runs = tmp_path / "runs"
    _plant(runs, "sgd", {"optimizer": "sgd", "num_epochs": 2}, 10.0)
    out = tmp_path / "out"
    import report.export

    real_fdopen = os.fdopen
    monkeypatch.setattr(report.export.os, "fdopen", lambda fd, *a, **k: _FullDiskFile(real_fdopen(fd, *a, **k)))
    assert main(["export", "problem1.optimizer", "--team", "t", "--no-figures", "--out", str(out), "--runs-dir",
                 str(runs), "--ablations-dir", str(ablations)]) == 1
    err = without_traceback(capsys)
    assert f"No space left on device ({out / 'dlad_ex2_report.t.zip'}): the disk is full" in err, err
    assert list(out.iterdir()) == []  # the half-written archive was removed


def test_a_full_disk_at_run_start_is_one_line_and_trains_nothing(project, capsys, monkeypatch, cache_dir):
    seen = []

    def profile_file(name: str) -> bool:  # the first file `run` writes: runs/<entry>/.profile
        seen.append(name)
        return name.startswith("..profile.") and name.endswith(".tmp")

    monkeypatch.setattr(mtl.run.io, "os", _OsWithFullDisk(os, profile_file))
    runs = project["tmp"] / "runs"
    assert main(["run", "t.opt", "--devices", "cpu", "--runs-dir", str(runs), "--ablations-dir",
                 str(project["ablations"])]) == 1
    err = without_traceback(capsys)
    assert f"No space left on device ({runs / 't.opt' / '.profile'}): the disk is full" in err, (err, seen)
    assert not [p for p in (runs / "t.opt").iterdir() if p.is_dir()]  # no run directory, nothing trained


def test_a_bug_prints_its_traceback_and_keeps_it_in_a_log(project, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("a planted bug")

    monkeypatch.setattr(cli, "plan_summary", broken)
    assert main(["list", "--ablations-dir", str(project["ablations"]), "--runs-dir", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a planted bug" in err
    (log,) = (tmp_path / "cache" / "logs").glob("mtl-ablate-*.log")
    assert f"kept in {log}" in " ".join(err.split())
    assert "RuntimeError: a planted bug" in log.read_text() and "command: mtl-ablate list" in log.read_text()
