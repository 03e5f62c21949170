"""Environment capture, as W&B and ClearML do it: each run records its git commit and dirty diff (bounded),
``pip freeze``, torch with CUDA and cuDNN, and the device, in environment.json, its W&B config and the export,
with every secret redacted; ``mtl-ablate diff RUN_A RUN_B`` shows what differs (config, code, environment,
data)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from mtl.run.layout import RunDirectory
from mtl.run.records import read_environment, read_record
from mtl.suite import main
from mtl.train import environment
from report.leaks import scan_file
from support import REPO, forked_train, tiny_args
from test_tracking_wandb import (
    auto_config,
    home,  # noqa: F401 - a fixture: a HOME without W&B credentials
    offline_run_file,
    wandb_records,
)

WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"
DIFF_WITH_SECRETS = (f"+WANDB_API_KEY={WANDB_KEY}\n+token = ghp_{'a' * 36}\n"
                     "+data_root: /home/alice/miniscapes/\n+-----BEGIN OPENSSH PRIVATE KEY-----\n+b3BlbnNzaA==\n"
                     "+-----END OPENSSH PRIVATE KEY-----\n+lr: 0.01\n")


@pytest.fixture
def dirty(monkeypatch):
    """The checkout's git state as if it held an uncommitted edit with secrets in it."""
    state = {"git_commit": "f" * 40, "git_dirty": True, "git_diff": DIFF_WITH_SECRETS}
    monkeypatch.setattr(environment, "git_state", lambda: dict(state))
    return state


def test_a_dirty_diff_is_recorded_redacted_and_the_records_pass_the_leak_scan(dirty, tmp_path):
    captured = environment.capture(torch.device("cpu"))
    assert captured.git_commit == "f" * 40 and captured.git_dirty is True
    for secret in (WANDB_KEY, "ghp_", "/home/alice", "b3BlbnNzaA=="):
        assert secret not in captured.git_diff, captured.git_diff
    assert "[redacted W&B API key]" in captured.git_diff and "~/miniscapes/" in captured.git_diff
    assert "+lr: 0.01" in captured.git_diff  # the rest of the edit stays
    assert set(captured.redacted) == {"private key", "W&B API key", "GitHub token", "absolute home path"}
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    environment.record(run, captured)
    assert scan_file(run.environment) == []  # what the export's leak scan would find: nothing
    assert "git_diff" not in environment.summary(captured) and "packages" not in environment.summary(captured)


def test_a_long_diff_is_cut_at_the_bound_keeping_its_size_and_digest(monkeypatch):
    big = "+x = 1\n" * (environment.MAX_DIFF_BYTES // 7 + 1000)
    monkeypatch.setattr(environment, "git_state", lambda: {"git_commit": "c" * 40, "git_dirty": True,
                                                           "git_diff": big})
    captured = environment.capture(torch.device("cpu"))
    assert captured.git_diff_bytes == len(big)
    assert len(captured.git_diff.encode()) < environment.MAX_DIFF_BYTES + 100
    assert f"[cut: {len(big)} bytes in all, {environment.MAX_DIFF_BYTES} kept]" in captured.git_diff


def test_an_attempt_in_the_same_environment_adds_nothing_and_another_is_kept_beside_it(dirty, tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    first = environment.capture(torch.device("cpu"))
    environment.record(run, first)
    environment.record(run, first)
    assert read_environment(run.path).attempts == (first,)
    moved = first.model_copy(update={"device": "cuda: Some GPU"})
    environment.record(run, moved)
    assert read_environment(run.path).attempts == (first, moved)


@pytest.mark.usefixtures("home")
def test_the_environment_goes_into_the_wandb_config(tmp_path, dirty):
    run_dir = tmp_path / "run"
    from mtl.train.tracking import WandbSink

    sink = WandbSink(auto_config(wandb_console=False, wandb_system_metrics=False), run_dir, "env1")
    captured = environment.capture(torch.device("cpu"))
    sink.config({"environment": environment.summary(captured)})
    sink.finish()
    updates = [item for record in wandb_records(offline_run_file(run_dir)) if record.HasField("config")
               for item in record.config.update]
    (value,) = [json.loads(item.value_json) for item in updates if item.key == "environment"]
    assert value["git_commit"] == "f" * 40 and value["torch"] == torch.__version__ and value["device"].startswith("cpu")
    assert WANDB_KEY not in json.dumps(value)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = forked_train(run_dir, *tiny_args(num_epochs=1))
    assert result.returncode == 0, result.stdout[-3000:]
    return run_dir


@pytest.mark.slow
def test_a_trained_run_records_what_it_trained_with(trained):
    (recorded,) = read_environment(trained).attempts
    assert recorded.torch == torch.__version__ and recorded.cuda == torch.version.cuda
    assert recorded.device.startswith("cpu: ")
    assert any(line.startswith("torch==") for line in recorded.packages)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit, and whether it has uncommitted changes
        assert recorded.git_commit == head.stdout.strip()
        assert recorded.git_dirty is not None


def _copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.slow
def test_diff_names_what_differs_section_by_section(trained, tmp_path, capsys):
    same = _copy_run(trained, tmp_path / "same")
    assert main(["diff", str(trained), str(same)]) == 0
    out = capsys.readouterr().out
    assert all(f"{section}: the same" in out for section in ("config", "code", "environment", "data")), out

    other = _copy_run(trained, tmp_path / "other")
    run = RunDirectory(other)
    config = yaml.safe_load(run.config_path.read_text())
    run.config_path.write_text(yaml.safe_dump({**config, "workers": 3}))  # run-invariant: the hash holds
    status = json.loads(run.status_path.read_text())
    run.status_path.write_text(json.dumps({**status, "dataset": "0" * 16, "code_version": "1" * 16}))
    recorded = read_environment(other).attempts[-1]
    packages = tuple(f"{line.split('==')[0]}==0.0" if line.startswith("numpy==") else line
                     for line in recorded.packages)
    changed = recorded.model_copy(update={"torch": "2.5.1", "git_commit": "a" * 40, "packages": packages})
    run.environment.write_text(json.dumps({"attempts": [changed.model_dump(mode="json")]}))
    with zipfile.ZipFile(run.source_zip, "a") as archive:
        archive.writestr("mtl/extra.py", "x = 1\n")
    assert read_record(other).state == "finished"  # still a sound run
    assert main(["diff", str(trained), str(other)]) == 1
    out = capsys.readouterr().out
    for said in ("config: 1 difference(s)", "workers: 0 | 3 (where or how it ran, not what it computed)",
                 "code: 2 difference(s)", "mtl/extra.py: only in B", "environment: 3 difference(s)",
                 f"torch: {torch.__version__!r} | '2.5.1'", "git_commit:", "package numpy:",
                 "data: 1 difference(s)", "dataset fingerprint:"):
        assert said in out, (said, out)


def test_diff_refuses_what_is_no_run(tmp_path, capsys):
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--runs-dir", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_the_export_ships_each_runs_environment(trained):
    import pandas as pd

    from report.export import submission_members

    runs = pd.DataFrame([{"source": str(trained), "run": trained.name, "state": "finished"}])
    section = SimpleNamespace(entry=SimpleNamespace(id="problem1.x"), tables=SimpleNamespace(runs=runs))
    members, exported, _, _ = submission_members([section])
    (shipped,) = [m for m in members if m.name == f"submissions/problem1.x/{trained.name}/environment.json"]
    assert shipped.path == RunDirectory(trained).environment and exported == [f"problem1.x/{trained.name}"]
