"""W&B sweeps: valid sweep configs whose agent command lines rebuild the configs of the local plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweeps import RunState, SweepConfig, next_run, schema_violations_from_proposed_config
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from mtl.ablate.entry import load_entries
from mtl.ablate.planner import make_plan, plan
from mtl.ablate.sweep import sweep_configs
from mtl.config import config_from_cli
from mtl.suite import main
from support import REPO
from test_ablate_planner import plant_run

ABLATIONS = REPO / "ablations"


def grid_points(config: dict) -> list[dict]:
    """Every parameter set the W&B grid controller proposes, as the agent receives them."""
    runs = []
    while (run := next_run(config, runs)) is not None:
        run.state = RunState.finished
        runs.append(run)
    return [run.config for run in runs]


def agent_argv(config: dict, params: dict, interpreter: str, run_id: str, runs_dir: Path) -> list[str]:
    """Build the command exactly as `wandb agent` does, run it, and return the argv the interpreter receives."""
    sweep_vars = create_sweep_command_args({"args": params})
    sweep_vars.update(env=["/usr/bin/env"], interpreter=[interpreter], program=[])
    command = []
    for chunk in config["command"]:
        if chunk.startswith("${") and chunk.endswith("}"):
            command += sweep_vars.get(chunk[2:-1]) or []
        else:
            command.append(chunk)
    env = {**os.environ, "WANDB_RUN_ID": run_id, "MTL_RUNS_DIR": str(runs_dir)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=30)
    return json.loads(result.stdout)


@pytest.fixture
def argv_printer(tmp_path) -> str:
    """Stands in for the Python interpreter at the end of the agent's command: prints what it was given."""
    script = tmp_path / "print-argv"
    script.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("entry_id, expected_sweeps", [("problem1.optimizer", 2), ("problem1.lr", 1)])
def test_sweeps_are_valid_and_rebuild_the_local_configs(tmp_path, argv_printer, entry_id, expected_sweeps):
    runs_dir = tmp_path / "runs"
    entries = load_entries(ABLATIONS)
    for run in plan(entries["problem1.optimizer"], "quick", runs_dir):
        plant_run(run, [10.0] if run.variant == "sgd" else [20.0])  # adam wins
    local = make_plan(entries[entry_id], "quick", runs_dir)
    configs = sweep_configs(local)
    assert len(configs) == expected_sweeps
    seen = set()
    for name, config in configs.items():
        assert schema_violations_from_proposed_config(config) == []
        SweepConfig(config)  # the sweeps package's own validation and defaults
        assert config["method"] == "grid" and config["metric"] == {"name": "val/grader", "goal": "maximize"}
        for params in grid_points(config):
            run_id = f"r{len(seen)}"
            argv = agent_argv(config, params, argv_printer, run_id, runs_dir)
            assert argv[:2] == ["-m", "mtl.cli"]
            agent_config = config_from_cli(argv[2:])
            match = [r for r in local.runs
                     if r.config.seed == agent_config.seed and
                     r.config.hyperparameters() == agent_config.hyperparameters()]
            assert len(match) == 1, (name, params)
            seen.add(match[0].name)
            # Same W&B grouping as the local run; a directory of its own; the agent's run id.
            assert agent_config.wandb_group == entry_id and agent_config.wandb_tags == ("problem1",)
            assert agent_config.log_dir == f"{runs_dir}/{entry_id}/sweeps/{run_id}"
            assert agent_config.wandb_run_id == run_id
            assert agent_config.dataset == "synthetic"
    assert seen == {r.name for r in local.runs}  # every local run, each exactly once


def test_lr_sweep_varies_the_resolved_bracket(tmp_path):
    runs_dir = tmp_path / "runs"
    entries = load_entries(ABLATIONS)
    for run in plan(entries["problem1.optimizer"], "quick", runs_dir):
        plant_run(run, [30.0] if run.variant == "sgd" else [20.0])  # sgd wins
    (config,) = sweep_configs(make_plan(entries["problem1.lr"], "quick", runs_dir)).values()
    assert config["parameters"] == {"optimizer_lr": {"values": [0.001, 0.01, 0.1]}, "seed": {"values": [0]}}
    assert "--optimizer=sgd" in config["command"]


def test_sweep_command_writes_yaml_and_refuses_unresolved_bases(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    assert main(["sweep", "problem1.optimizer", "--profile", "quick", "--runs-dir", str(runs_dir)]) == 0
    written = sorted((runs_dir / "problem1.optimizer" / "sweep-configs").glob("*.sweep.yaml"))
    assert [p.name for p in written] == ["problem1.optimizer.adam.sweep.yaml", "problem1.optimizer.sgd.sweep.yaml"]
    for path in written:
        assert schema_violations_from_proposed_config(yaml.safe_load(path.read_text())) == []
    assert main(["sweep", "problem1.lr", "--profile", "quick", "--runs-dir", str(runs_dir)]) == 2
    assert "run `mtl-ablate run problem1.optimizer --profile quick` first" in capsys.readouterr().err


def test_create_without_credentials_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["sweep", "problem1.optimizer", "--profile", "quick", "--runs-dir", str(tmp_path), "--create"]) == 2
    assert "needs W&B credentials" in capsys.readouterr().err
