"""Suite interruption and divergence, through real ``mtl-ablate run`` processes (tests/test_ablate_run.py
covers one kill and one restart; this adds two restarts at once, the W&B run id and a diverging run).

One entry, three runs in order on one slot: ``diverges`` (a learning rate of 1e6, a real divergence),
``killed`` and ``other``, all logging to W&B offline. The first ``mtl-ablate run`` sees ``diverges``
stop (state diverged, exit 3, the last good checkpoint kept) and goes on to ``killed``, and is killed
with SIGKILL -- process group and training together -- once ``killed`` checkpointed an epoch. Then two
``mtl-ablate run`` start at once. Every run must train exactly once (no epoch validated twice in its
console log), the resumed run must continue the same W&B run id, and a third start touches nothing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from faults.checks import check_run_dir
from faults.runs import FAULT_CONFIG
from mtl.ablate.entry import load_entries
from mtl.ablate.planner import plan
from mtl.ablate.scheduler import log_path
from mtl.run.records import read_record
from mtl.suite import main as ablate_main
from support import REPO, wait_for_epoch

pytestmark = pytest.mark.slow

ENTRY = "problem1.suite"
PROFILE = {**{k: v for k, v in FAULT_CONFIG.items() if k != "num_threads"}, "wandb_mode": "offline",
           "checkpoint_interval_steps": 1}


@pytest.fixture
def suite(tmp_path, cache_dir):
    ablations = tmp_path / "ablations"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(PROFILE))
    (ablations / f"{ENTRY}.yaml").write_text(yaml.safe_dump({
        "question": "Does the suite survive?", "item": "1.1", "base": "tiny",
        "variants": [{"name": "diverges", "overrides": {"optimizer_lr": 1.0e6}},
                     {"name": "killed", "overrides": {}},
                     {"name": "other", "overrides": {"optimizer_lr": 0.02}}],
    }, sort_keys=False))
    runs_dir = tmp_path / "runs"
    specs = {spec.variant: spec for spec in plan(load_entries(ablations)[ENTRY], None, runs_dir)}
    args = ["run", ENTRY, "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir), "--devices", "cpu",
            "--jobs-per-device", "1"]
    # W&B's own settings and caches stay in the test's folder.
    env = {**os.environ, **{name: str(tmp_path / "wandb-home") for name in
                            ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")}}
    return specs, args, env


def start_ablate(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtl.suite", *args], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wandb_run_folders(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))


def validated_epochs(log: str) -> list[int]:
    """Epochs whose validation ran, from mtl-train's console lines ("epoch 1/2: grader ...")."""
    return [int(m) for m in re.findall(r"^epoch (\d+)/\d+: grader", log, flags=re.MULTILINE)]


def snapshot(paths: list[Path]) -> dict[Path, tuple[int, bytes]]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}


def test_killed_suite_restarted_twice_at_once_trains_each_run_once(suite, capsys):
    specs, args, env = suite
    diverges, killed, other = specs["diverges"], specs["killed"], specs["other"]

    first = start_ablate(args, env)
    try:
        wait_for_epoch(killed.run_dir, first, timeout=400, poll=0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The diverged run stopped cleanly and the suite went on to the next run.
    status = read_record(diverges.run_dir).status
    assert status.state == "diverged", status
    assert re.search(r"non-finite .* step \d+", status.error) and status.diverged_step >= 1, status
    if status.checkpoint_step is not None:  # the checkpoint kept is finite and the one the status names
        kept = torch.load(diverges.run_dir / "checkpoints" / "last.pt", weights_only=False)
        assert kept["step"] == status.checkpoint_step
        assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
    assert "diverged" in log_path(diverges).read_text()
    wandb_id = read_record(killed.run_dir).status.wandb_run_id
    folders = wandb_run_folders(killed.run_dir)
    assert folders and all(name.endswith(f"-{wandb_id}") for name in folders), folders
    assert check_run_dir(killed.run_dir).problems == []

    second, third = start_ablate(args, env), start_ablate(args, env)  # two at once
    outputs = [p.communicate(timeout=600)[0] for p in (second, third)]
    codes = [second.returncode, third.returncode]
    assert codes == [0, 0], outputs  # a diverged run is a result (recorded, reported), not a failure

    for spec in (killed, other):
        record = read_record(spec.run_dir)
        assert record.state == "finished", (spec.name, record.status, outputs)
        assert [p["epoch"] for p in record.points] == [1, 2]
        # Trained exactly once: across every attempt, each epoch was validated once, none repeated.
        assert validated_epochs(log_path(spec).read_text()) == [1, 2], log_path(spec).read_text()
        assert check_run_dir(spec.run_dir).problems == []
    assert read_record(diverges.run_dir).state == "diverged"
    assert log_path(diverges).read_text().count("mtl-train: diverged") == 1  # not retried by either

    # W&B: the resumed run continued the same run id, in a new offline folder of that id.
    assert read_record(killed.run_dir).status.wandb_run_id == wandb_id
    folders = wandb_run_folders(killed.run_dir)
    assert len(folders) >= 2 and all(name.endswith(f"-{wandb_id}") for name in folders), folders
    assert wandb_run_folders(other.run_dir)  # other runs log to W&B offline too

    # A third start finds nothing to do and touches nothing.
    watched = [killed.run_dir, other.run_dir, diverges.run_dir, log_path(killed).parent]
    before = snapshot(watched)
    assert ablate_main(args) == 0
    assert snapshot(watched) == before
    out = capsys.readouterr().out
    assert "already finished" in out and "--retry-failed" in out
