"""Secrets: with fake credentials in the environment and a fake ~/.netrc, a run logged to W&B (offline)
and the hand-in export built from it hold none of them, in any byte of any file or zip member."""

from __future__ import annotations

import pytest
import yaml

from faults.launcher import run_train
from faults.runs import FAULT_CONFIG
from faults.secrets import fake_credentials, scan_for_secrets, secret_values
from mtl.ablate.entry import load_entries
from mtl.ablate.planner import plan
from mtl.config import cli_args
from mtl.suite import main as ablate_main

pytestmark = pytest.mark.slow

ENTRY = "problem1.secrets"


def test_no_credential_reaches_a_run_directory_wandb_files_or_the_export(tmp_path, cache_dir, monkeypatch):
    ablations, runs_dir, out = tmp_path / "ablations", tmp_path / "runs", tmp_path / "out"
    (ablations / "profiles").mkdir(parents=True)
    profile = {**{k: v for k, v in FAULT_CONFIG.items() if k != "wandb_mode"}, "wandb_mode": "offline"}
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(profile))
    (ablations / f"{ENTRY}.yaml").write_text(yaml.safe_dump(
        {"question": "Does anything leak?", "item": "1.1", "base": "tiny"}))
    (spec,) = plan(load_entries(ablations)[ENTRY], None, runs_dir)
    env = fake_credentials(tmp_path / "home")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(tmp_path / "home" / ".wandb")

    code, _ = run_train(cli_args(spec.config), tmp_path / "train.log", env=env)
    assert code == 0, (tmp_path / "train.log").read_text()[-3000:]
    offline_runs = list((spec.run_dir / "wandb").glob("offline-run-*"))
    assert offline_runs and any(p.suffix == ".wandb" for p in offline_runs[0].iterdir())  # W&B really logged

    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the export runs with the same credentials around
    assert ablate_main(["export", ENTRY, "--team", "team", "--ablations-dir", str(ablations),
                        "--runs-dir", str(runs_dir), "--out", str(out), "--no-cache"]) == 0
    (archive,) = out.glob("*.zip")

    scanned, findings = scan_for_secrets([spec.run_dir, archive, tmp_path / "train.log"])
    assert findings == []
    assert scanned > 50  # every run file, W&B's files, and the members of every zip inside


def test_the_scan_finds_a_planted_secret_inside_a_nested_zip(tmp_path):
    """The scanner itself: a secret two zips deep (as in submission.zip > source.zip) is found."""
    import io
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cmd.txt", b"token: " + secret_values()[0])
    with zipfile.ZipFile(tmp_path / "submission.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("source.zip", inner.getvalue())
    scanned, findings = scan_for_secrets([tmp_path])
    assert scanned == 3 and len(findings) == 1 and "source.zip!cmd.txt" in findings[0]
