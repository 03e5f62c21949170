"""A race through real ``mtl-ablate run`` and ``mtl-train`` processes: runs pause at the rung with their
checkpoints, the behind are pruned, the rest go on; ``mtl-ablate`` killed with SIGKILL mid-race and run
again trains nothing twice and reaches the decision an unbroken race reaches; ``status`` and ``report``
show the pruned runs and the decision."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from mtl.ablate.entry import load_entries
from mtl.ablate.planner import entry_decision, make_plan
from mtl.run.layout import RunDirectory, has_started
from mtl.run.model import RunState
from mtl.run.records import read_status, recorded_state
from mtl.run.trace import read_trace
from mtl.suite import main as ablate_main
from support import REPO, SUITE_PROFILE

pytestmark = pytest.mark.slow

ENTRY = "problem1.race"
# Two variants a seed apart in the race's eyes; a lenient confidence so that a tiny race prunes and decides.
RACE = {"rungs": [0.5], "min_seeds": 2, "max_seeds": 3, "confidence": 0.6, "prune_confidence": 0.6}


@pytest.fixture
def ablations(tmp_path, cache_dir):
    folder = tmp_path / "ablations"
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(SUITE_PROFILE))
    (folder / f"{ENTRY}.yaml").write_text(yaml.safe_dump({
        "question": "Which learning rate?", "item": "1.1", "base": "tiny", "racing": RACE,
        "grid": {"optimizer_lr": [1.0e-6, 0.02]}}, sort_keys=False))
    return folder


def ablate(ablations, runs_dir, *extra: str) -> list[str]:
    return ["run", ENTRY, "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir), "--devices", "cpu",
            "--jobs-per-device", "1", *extra]


def trained_epochs(log: str) -> list[int]:
    """Epochs whose validation ran, from mtl-train's console lines ("epoch 1/2: grader ...")."""
    return [int(m) for m in re.findall(r"^epoch (\d+)/\d+: grader", log, flags=re.MULTILINE)]


def plan_of(ablations, runs_dir):
    return make_plan(load_entries(ablations)[ENTRY], None, runs_dir)


def test_a_race_killed_mid_way_and_run_again_trains_nothing_twice_and_decides_as_an_unbroken_one(
        ablations, tmp_path, capsys):
    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    assert ablate_main(ablate(ablations, unbroken)) == 0
    out = capsys.readouterr().out
    assert "racing: rungs at epochs 1 of 2, 2 to 3 seeds a variant" in out
    reference = entry_decision(plan_of(ablations, unbroken))
    assert reference is not None and f"{ENTRY}: {reference.describe()}" in out
    states = {spec.name: recorded_state(spec.run_dir) for spec in plan_of(ablations, unbroken).runs
              if has_started(spec.run_dir)}
    assert set(states.values()) <= {RunState.FINISHED, RunState.PRUNED}, states

    # The same race, its mtl-ablate killed (SIGKILL: no handler runs) once a first run paused at the rung.
    first = subprocess.Popen([sys.executable, "-m", "mtl.suite", *ablate(ablations, killed)], cwd=REPO,
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    specs = plan_of(ablations, killed).runs
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if any(recorded_state(s.run_dir) is RunState.PAUSED for s in specs):
            break
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()[0]
    os.kill(first.pid, signal.SIGKILL)  # mtl-ablate alone: a trainer it started goes on, holding its run's lock
    first.wait()
    assert ablate_main(ablate(ablations, killed)) == 0
    capsys.readouterr()
    again = entry_decision(plan_of(ablations, killed))
    assert again == reference

    for spec, twin in zip(plan_of(ablations, killed).runs, plan_of(ablations, unbroken).runs):
        assert has_started(spec.run_dir) == has_started(twin.run_dir), spec.name
        if not has_started(spec.run_dir):
            continue
        # Trained once: every epoch validated once over all attempts, and bitwise the unbroken race's run.
        epochs = trained_epochs(RunDirectory(spec.run_dir).log.read_text())
        assert epochs == sorted(set(epochs)), (spec.name, epochs)
        strip = lambda points: [{k: v for k, v in p.items() if k != "time"} for p in points]  # noqa: E731
        assert strip(read_trace(RunDirectory(spec.run_dir).metrics)) == \
            strip(read_trace(RunDirectory(twin.run_dir).metrics)), spec.name
        assert read_status(spec.run_dir).state == read_status(twin.run_dir).state

    # Run again, it trains nothing and says the same.
    before = {s.name: RunDirectory(s.run_dir).metrics.read_bytes() for s in specs if has_started(s.run_dir)}
    assert ablate_main(ablate(ablations, killed)) == 0
    assert "race round" not in capsys.readouterr().out
    assert before == {s.name: RunDirectory(s.run_dir).metrics.read_bytes() for s in specs if has_started(s.run_dir)}

    # status and report: the pruned runs with where and why, the decision with its test.
    assert ablate_main(["status", ENTRY, "--ablations-dir", str(ablations), "--runs-dir", str(killed)]) == 0
    status = capsys.readouterr().out
    assert reference.describe()[:40] in status
    out_dir = tmp_path / "report"
    assert ablate_main(["report", ENTRY, "--ablations-dir", str(ablations), "--runs-dir", str(killed), "--out",
                        str(out_dir), "--no-figures"]) == 0
    report = (out_dir / "report.md").read_text()
    assert f"Decision: {reference.describe()}." in report
    pruned = [s for s in specs if recorded_state(s.run_dir) is RunState.PRUNED]
    assert pruned and "pruned" in status and "behind" in status  # the state, and why in the error column
    for spec in pruned:
        assert f"{spec.name}: pruned at step" in report
