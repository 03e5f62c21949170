"""``mtl-ablate export``: the leak scan refuses planted secrets (in a file and in a nested zip) naming
file, member and line; a clean archive holds every cited submission.zip byte for byte."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from mtl.ablate.entry import load_entries
from planting import plant_predictions, plant_run, plant_submission, validation_point
from report.commands import main as report_main
from report.export import ExportError, archive_name, export
from report.leaks import LeakError, scan_bytes

WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"
NGROK_TOKEN = "2AbCdEfGhIjKlMnOpQrStUvWxYz_1a2B3c4D5e6F7g8H9i0J"


def _write_entries(folder, question="Which optimizer is better?"):
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "quick.yaml").write_text("num_epochs: 2\n")
    (folder / "problem1.optimizer.yaml").write_text(
        f"question: {json.dumps(question)}\nitem: 1.1a\nbase: quick\n"
        "variants:\n  - name: sgd\n    overrides: {optimizer: sgd}\n"
        "  - name: adam\n    overrides: {optimizer: adam, optimizer_lr: 1.0e-4}\n"
        "report:\n  columns: [optimizer, optimizer_lr]\n  figures: [curves]\n")
    return folder


def _plant(runs, variant, overrides, grader, state="finished", submission=True):
    run_dir = plant_run(runs, "problem1.optimizer", variant, 0, overrides=overrides, state=state,
                        points=[validation_point(10, 1, grader, 50.0 + grader, 40.0)])
    if submission:
        plant_predictions(run_dir, {0: (np.zeros((32, 32), np.uint8), np.full((32, 32), 10.0))})
        plant_submission(run_dir)
    return run_dir


@pytest.fixture()
def project(tmp_path):
    ablations = _write_entries(tmp_path / "ablations")
    runs = tmp_path / "runs"
    sgd = _plant(runs, "sgd", {"optimizer": "sgd", "num_epochs": 2}, 10.0)
    adam = _plant(runs, "adam", {"optimizer": "adam", "optimizer_lr": 1e-4, "num_epochs": 2}, 12.0)
    return {"ablations": ablations, "runs": runs, "sgd": sgd, "adam": adam, "out": tmp_path / "out"}


def _entries(project):
    return list(load_entries(project["ablations"]).values())


def test_clean_export_holds_each_submission_byte_for_byte(project):
    result = export("team-a", project["runs"], _entries(project), project["out"], draw_figures=False)
    assert result.path == project["out"] / "dlad_ex2_report.team-a.zip"
    assert sorted(p.name for p in project["out"].iterdir()) == ["dlad_ex2_report.team-a.zip"]  # no temp left
    with zipfile.ZipFile(result.path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("MANIFEST.json"))
        for run_dir in (project["sgd"], project["adam"]):
            name = f"submissions/problem1.optimizer/{run_dir.name}/submission.zip"
            assert archive.read(name) == (run_dir / "submission.zip").read_bytes()
            assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED
            assert manifest["members"][name]["sha256"] == hashlib.sha256(archive.read(name)).hexdigest()
        assert {"report/report.md", "report/report.tex", "report/tables/problem1.optimizer.runs.csv"} <= set(names)
        assert "CONCLUSION(problem1.optimizer)" in archive.read("report/report.md").decode()
    exported = sorted(f"problem1.optimizer/{d.name}" for d in (project["sgd"], project["adam"]))
    assert sorted(result.exported_runs) == exported


def test_unfinished_runs_are_listed_not_exported(project):
    failed = _plant(project["runs"], "adam", {"optimizer": "adam", "num_epochs": 3}, 1.0, state="failed",
                    submission=False)
    result = export("t", project["runs"], _entries(project), project["out"], draw_figures=False)
    reason = "state failed: no submission.zip until it finishes"
    assert result.skipped_runs == {f"problem1.optimizer/{failed.name}": reason}
    with zipfile.ZipFile(result.path) as archive:
        assert json.loads(archive.read("MANIFEST.json"))["runs_not_exported"] == result.skipped_runs


def test_diverged_and_skipped_runs_are_results_not_missing(project, capsys):
    diverged = project["adam"]  # the planned adam run, now diverged: no submission.zip
    status = json.loads((diverged / "status.json").read_text())
    (diverged / "status.json").write_text(json.dumps({**status, "state": "diverged"}))
    (diverged / "submission.zip").unlink()
    result = export("t", project["runs"], _entries(project), project["out"], draw_figures=False, strict=True)
    key = f"problem1.optimizer/{diverged.name}"
    assert result.missing == [] and result.path.exists()
    assert result.without_submission == {key: "diverged: its result is the divergence the tables show, no weights "
                                              "to grade"}
    with zipfile.ZipFile(result.path) as archive:
        manifest = json.loads(archive.read("MANIFEST.json"))
    assert manifest["complete"] is True and manifest["runs_without_submission"] == result.without_submission
    assert report_main(["export", "--team", "t", "--runs-dir", str(project["runs"]), "--ablations-dir",
                        str(project["ablations"]), "--out", str(project["out"]), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert f"note: run {key} has no submission.zip: diverged" in out


def test_finished_run_without_submission_is_an_error(project):
    (project["sgd"] / "submission.zip").unlink()
    with pytest.raises(ExportError, match=rf"{project['sgd'].name} is finished but has no submission.zip"):
        export("t", project["runs"], _entries(project), project["out"], draw_figures=False)


def test_token_in_a_report_file_is_refused_with_file_and_line(project, tmp_path):
    question = f"Which optimizer? WANDB_API_KEY={WANDB_KEY}"
    ablations = _write_entries(tmp_path / "leaky", question=question)
    with pytest.raises(LeakError) as caught:
        export("t", project["runs"], list(load_entries(ablations).values()), project["out"], draw_figures=False)
    findings = {(f.file, f.member, f.kind) for f in caught.value.findings}
    assert ("report/report.md", "", "W&B API key") in findings
    assert ("report/report.tex", "", "W&B API key") in findings
    # The question is on line 7 of report.md (after the title, the preamble and the section heading).
    md = next(f for f in caught.value.findings if f.file == "report/report.md")
    assert md.line == 7
    assert "report/report.md line 7: W&B API key" in str(caught.value)
    assert WANDB_KEY not in str(caught.value)  # the message masks the secret
    assert not project["out"].exists() or not any(project["out"].iterdir())  # nothing written


def _replace_member(zip_path, member, data):
    with zipfile.ZipFile(zip_path) as archive:
        members = {info: archive.read(info.filename) for info in archive.infolist()}
    with zipfile.ZipFile(zip_path, "w") as archive:
        for info, content in members.items():
            archive.writestr(info, data if info.filename == member else content)


def test_token_inside_a_nested_zip_is_refused_naming_member_and_line(project):
    submission = project["adam"] / "submission.zip"
    with zipfile.ZipFile(submission) as archive:
        source = archive.read("source.zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as inner, zipfile.ZipFile(buffer, "w") as patched:
        for name in inner.namelist():
            patched.writestr(name, inner.read(name))
        patched.writestr("mtl/tunnel.py", f'import ngrok\n\nngrok.set_auth_token("{NGROK_TOKEN}")\n')
    _replace_member(submission, "source.zip", buffer.getvalue())
    with pytest.raises(LeakError) as caught:
        export("t", project["runs"], _entries(project), project["out"], draw_figures=False)
    [finding] = caught.value.findings
    assert finding.file == f"submissions/problem1.optimizer/{project['adam'].name}/submission.zip"
    assert (finding.member, finding.line, finding.kind) == ("source.zip!mtl/tunnel.py", 3, "ngrok auth token")
    assert f"{finding.file} member source.zip!mtl/tunnel.py line 3: ngrok auth token" in str(caught.value)


def test_home_path_in_a_checkpoint_pickle_is_refused(project):
    buffer = io.BytesIO()
    torch.save({"config": {"log_dir": "/home/alice/runs/x"}, "weights": torch.zeros(4)}, buffer)
    _replace_member(project["sgd"] / "submission.zip", "checkpoints/best.ckpt", buffer.getvalue())
    with pytest.raises(LeakError) as caught:
        export("t", project["runs"], _entries(project), project["out"], draw_figures=False)
    [finding] = caught.value.findings
    assert finding.member.startswith("checkpoints/best.ckpt!") and finding.member.endswith("data.pkl")
    assert finding.kind == "absolute home path"


def test_export_command_exit_codes(project, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))  # the command caches run summaries there
    common = ["--runs-dir", str(project["runs"]), "--ablations-dir", str(project["ablations"]), "--out",
              str(project["out"]), "--no-figures"]
    assert report_main(["export", "--team", "bad name!", *common]) == 2
    assert "team name 'bad name!'" in capsys.readouterr().err
    assert report_main(["export", "--team", "ok", *common]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("dlad_ex2_report.ok.zip")


@pytest.mark.parametrize("text, kind", [
    (b"export WANDB_API_KEY=" + WANDB_KEY.encode(), "W&B API key"),
    (b"machine api.wandb.ai\n  login user\n  password " + WANDB_KEY.encode(), "W&B API key (.netrc password)"),
    (b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "private key"),
    (b"authtoken: " + NGROK_TOKEN.encode(), "ngrok auth token"),
    (b'OPENAI_API_KEY = "abcdefghijklmnopqrstuvwxyz123456"', "API key or token"),
    (b"data at /Users/bob/data/x.png", "absolute home path"),
    (b"cd /root/work", "absolute home path"),
])
def test_scan_finds(text, kind):
    assert kind in {f.kind for f in scan_bytes(b"first line\n" + text, "f.txt")}


@pytest.mark.parametrize("text", [
    b'key = os.environ.get("WANDB_API_KEY")',
    b"see /home/<user>/ for your files",
    b"cache under /work/root/cache and ~/.cache",
    b"ngrok http 8080",
    b"the checksum 0123456789abcdef0123456789abcdef01234567 of the file",
])
def test_scan_leaves_ordinary_text_alone(text):
    assert scan_bytes(text, "f.txt") == []


def test_netrc_file_is_refused_by_name():
    [finding] = scan_bytes(b"machine example.com login x password y\n", ".netrc")
    assert finding.kind.startswith(".netrc file")


def test_archive_name_rules():
    assert archive_name("team_7") == "dlad_ex2_report.team_7.zip"
    with pytest.raises(ExportError, match="team name"):
        archive_name("../x")


def _export_command(project, *extra):
    return report_main(["export", "--team", "t", "--runs-dir", str(project["runs"]), "--ablations-dir",
                        str(project["ablations"]), "--out", str(project["out"]), "--no-figures", "--no-cache", *extra])


def test_partial_export_warns_and_exits_0_unless_strict(project, capsys):
    (project["ablations"] / "problem1.momentum.yaml").write_text(
        "question: Does momentum help?\nitem: 1.1b\nbase: quick\n"
        "variants:\n  - name: m0\n    overrides: {optimizer_momentum: 0.0}\n")
    archive = project["out"] / "dlad_ex2_report.t.zip"
    assert _export_command(project, "--strict") == 1
    err = capsys.readouterr().err
    assert "missing: problem1.momentum: no runs recorded yet" in err
    assert "--strict and the archive would be incomplete: nothing written" in err
    assert not project["out"].exists() or not any(project["out"].iterdir())  # no archive, no temp file

    assert _export_command(project) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == str(archive)
    assert "missing: problem1.momentum: no runs recorded yet" in captured.err
    assert "warning: the archive is incomplete (1 item(s) missing" in captured.err
    with zipfile.ZipFile(archive) as written:
        manifest = json.loads(written.read("MANIFEST.json"))
        assert manifest["complete"] is False
        assert manifest["report_problems"] == [
            "problem1.momentum: no runs recorded yet (`mtl-ablate run problem1.momentum`)"
        ]
        assert len([n for n in written.namelist() if n.endswith("submission.zip")]) == 2


def test_complete_export_is_strict_clean(project, capsys):
    assert _export_command(project, "--strict") == 0
    assert "missing" not in capsys.readouterr().err


def test_a_submission_changed_during_export_is_refused(project, monkeypatch):
    import report.export as export_module

    real_scan = export_module.scan

    def scan_then_change(members):  # the file changes after it was hashed, before it is copied
        findings = real_scan(members)
        with open(project["sgd"] / "submission.zip", "ab") as handle:
            handle.write(b"appended")
        return findings

    monkeypatch.setattr(export_module, "scan", scan_then_change)
    with pytest.raises(ExportError, match=r"submission.zip changed while it was being exported"):
        export("t", project["runs"], _entries(project), project["out"], draw_figures=False)
    assert not list(project["out"].glob("*.zip"))
