"""W&B sweeps: one sweep per entry whose grid points, launched as ``wandb agent`` launches them, train
exactly the runs of the local plan, where ``status``, ``report``, ``best of`` and ``run`` find them.

The points come from the ``sweeps`` package (the grid controller W&B runs), and each is launched by wandb's
own agent code (``Agent._command_run`` of the pinned wandb 0.31: it builds the command from the sweep's
``command``, ``program`` and the point's ``${args}``, and starts it); only the server is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from sweeps import RunState, SweepConfig, next_run, schema_violations_from_proposed_config

from mtl.ablate.entry import load_entries
from mtl.ablate.planner import make_plan, plan
from mtl.ablate.scheduler import ActionKind, planned_action
from mtl.ablate.sweep import COMMAND, PROGRAM, metric_note, sweep_config
from mtl.ablate.sweep_run import PLACE_KEYS, SweepPointError, point_config
from mtl.ablate.sweep_run import main as sweep_run_main
from mtl.config import Config
from mtl.run.records import read_config, read_status
from mtl.suite import main
from support import ABLATIONS, REPO, TINY, write_entry
from test_ablate_planner import plant_run


def grid_points(config: dict, validate: bool = True) -> list[dict]:
    """Every parameter set the W&B grid controller proposes, as the agent receives them ({key: {value}}).

    ``validate``: check the config against the sweeps package's schema first (once: it takes seconds)."""
    if validate:
        SweepConfig(config)
    runs = []
    while (run := next_run(config, runs)) is not None:
        run.state = RunState.finished
        runs.append(run)
    return [run.config for run in runs]


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """Launch a grid point as ``wandb agent`` does, in this checkout; returns the exit code of its process.

    The agent's interpreter is the ``python`` on PATH: here a stand-in that runs (or, with ``record``,
    records the arguments of) this test's interpreter."""
    from wandb.wandb_agent import Agent

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "agent"))  # where the agent writes each point's config
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # the agent sets them in this process: undone after
        monkeypatch.setenv(name, "unset")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(REPO)
    (tmp_path / "agent").mkdir()

    def launch(sweep: dict, point: dict, run_id: str, record: Path | None = None) -> int:
        python = bin_dir / "python"
        if record is None:
            python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        else:
            python.write_text(f"#!{sys.executable}\nimport json, sys\n"
                              f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
        python.chmod(0o755)
        runner = Agent(api=None, queue=None, sweep_id="sweep1")
        runner._sweep_command = yaml.safe_load(yaml.safe_dump(sweep))["command"]  # as the server stores it
        runner._command_run({"type": "run", "run_id": run_id, "program": sweep["program"], "args": point})
        return runner._run_processes[run_id].wait(timeout=600)

    return launch


def recorded_argvs(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def plant_optimizer_runs(runs_dir: Path, sgd: float, adam: float) -> None:
    for run in plan(load_entries(ABLATIONS)["problem1.optimizer"], "quick", runs_dir):
        plant_run(run, [sgd] if run.variant == "sgd" else [adam])


# ------------------------------------------------------------------------------ the sweep's form
def plant_chain_before(entry_id: str, runs_dir: Path) -> None:
    """Finished runs for every entry before ``entry_id`` in the 'best of' chain (the last variant wins)."""
    for entry in load_entries(ABLATIONS).values():
        if entry.id == entry_id:
            return
        runs = plan(entry, "quick", runs_dir)
        variants = list(dict.fromkeys(r.variant for r in runs))
        for run in runs:
            plant_run(run, [10.0 + variants.index(run.variant)])


def test_named_variants_are_one_sweep_with_a_variant_parameter(tmp_path):
    plant_chain_before("problem2.branched", tmp_path)
    local = make_plan(load_entries(ABLATIONS)["problem2.branched"], "quick", tmp_path)
    config = sweep_config(local, "runs")
    assert schema_violations_from_proposed_config(config) == []
    assert config["name"] == "problem2.branched" and config["method"] == "grid"
    assert config["program"] == PROGRAM and Path(REPO / PROGRAM).is_file()
    assert config["command"] == COMMAND and "${args}" in config["command"]
    parameters = config["parameters"]
    assert parameters["variant"] == {"values": ["joint", "branched"]}
    assert parameters["seed"] == {"values": [0]}
    assert {k: parameters[k] for k in ("entry", "profile", "runs_dir")} == {
        "entry": {"value": "problem2.branched"}, "profile": {"value": "quick"}, "runs_dir": {"value": "runs"}}
    assert "model_name" not in parameters  # it differs between the variants: the variant decides it
    assert parameters["optimizer_lr"] == {"value": local.runs[0].config.optimizer_lr}
    swept_or_place = {"variant", "seed", *PLACE_KEYS}
    assert all(set(p) == {"value"} for k, p in parameters.items() if k not in swept_or_place)
    assert not set(PLACE_KEYS) & set(Config.model_fields)  # the program's own keys never shadow config keys
    assert len(grid_points(config)) == 2


@pytest.mark.parametrize("entry_id", ["problem1.optimizer", "problem1.lr"])
def test_each_point_launched_by_the_agent_names_one_planned_run(tmp_path, agent, entry_id):
    runs_dir = tmp_path / "runs"
    plant_optimizer_runs(runs_dir, sgd=10.0, adam=20.0)  # adam wins: problem1.lr builds on it
    local = make_plan(load_entries(ABLATIONS)[entry_id], "quick", runs_dir)
    sweep = sweep_config(local, runs_dir)
    record = tmp_path / "argv.jsonl"
    points = grid_points(sweep)
    for i, point in enumerate(points):
        assert agent(sweep, point, f"run{i}", record=record) == 0
    seen = []
    for i, argv in enumerate(recorded_argvs(record)):
        assert argv[:2] == ["-m", "mtl.ablate.sweep_run"]
        point = point_config(argv[2:], {"WANDB_RUN_ID": f"run{i}"})
        spec, config = point.spec, point.config
        seen.append(spec.name)
        # The plan's config, directory, W&B group and job type (the variant name); the agent's run id.
        assert config == spec.config.replace(wandb_run_id=f"run{i}")
        assert config.log_dir == str(runs_dir.absolute() / entry_id / spec.name)
        assert (config.wandb_group, config.wandb_job_type) == (entry_id, spec.variant)
    assert sorted(seen) == sorted(r.name for r in local.runs)  # every planned run, each once
    if entry_id == "problem1.lr":
        assert sweep["parameters"]["optimizer_lr"] == {"values": [1e-05, 0.0001, 0.001]}  # adam's 1e-4 bracket
        assert sweep["parameters"]["optimizer"] == {"value": "adam"}
        assert {r.variant for r in local.runs} == {f"optimizer_lr={v}" for v in ("1e-05", "0.0001", "0.001")}


def test_every_entrys_sweep_names_each_of_its_planned_runs_once(tmp_path):
    """The whole 'best of' chain under the quick profile (planted results, the last variant winning)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    for entry in load_entries(ABLATIONS).values():
        local = make_plan(entry, "quick", tmp_path)
        sweep = sweep_config(local, tmp_path)
        named = []
        for point in grid_points(sweep, validate=False):  # the form is validated in the other tests
            argv = create_sweep_command_args({"args": point})["args"]  # ${args}, as the agent formats it
            point = point_config(argv, {"WANDB_RUN_ID": "r"})
            assert point.config == point.spec.config.replace(wandb_run_id="r")
            named.append(point.spec.name)
        assert sorted(named) == sorted(run.name for run in local.runs), entry.id
        variants = list(dict.fromkeys(run.variant for run in local.runs))
        for run in local.runs:
            plant_run(run, [10.0 + variants.index(run.variant)])


def test_a_sweep_written_before_its_base_changed_is_refused(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    plant_optimizer_runs(runs_dir, sgd=30.0, adam=20.0)  # sgd wins
    sweep = sweep_config(make_plan(load_entries(ABLATIONS)["problem1.lr"], "quick", runs_dir), runs_dir)
    (point,) = [p for p in grid_points(sweep) if p["optimizer_lr"]["value"] == 0.01]
    plant_optimizer_runs(runs_dir, sgd=10.0, adam=20.0)  # now adam wins: the sweep is stale
    argv = [f"--{k}={v['value']}" for k, v in point.items()]
    with pytest.raises(SweepPointError) as error:
        point_config(argv, {})
    assert "optimizer: sweep 'sgd', plan 'adam'" in str(error.value)
    assert "write the sweep again with `mtl-ablate sweep problem1.lr --profile quick" in str(error.value)
    assert sweep_run_main(argv) == 2
    assert "matches no planned run of problem1.lr" in capsys.readouterr().err
    with pytest.raises(SweepPointError, match="log_dir cannot be given"):
        point_config([*argv, "--log_dir=/elsewhere"], {})
    with pytest.raises(SweepPointError, match="has no variant 'nope'"):
        point_config([*argv, "--variant=nope"], {})


def test_sweep_command_writes_yaml_and_refuses_unresolved_bases(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    assert main(["sweep", "problem1.optimizer", "--profile", "quick", "--runs-dir", str(runs_dir)]) == 0
    (written,) = (runs_dir / "problem1.optimizer" / "sweep-configs").glob("*.sweep.yaml")
    assert written.name == "problem1.optimizer.sweep.yaml"
    config = yaml.safe_load(written.read_text())
    assert schema_violations_from_proposed_config(config) == []
    assert "ablations_dir" not in config["parameters"]  # the default: each agent's own checkout
    assert main(["sweep", "problem1.lr", "--profile", "quick", "--runs-dir", str(runs_dir)]) == 2
    error = capsys.readouterr().err
    assert "problem1.lr: its base cannot be resolved" in error and "run `mtl-ablate run problem1.optimizer" in error


def test_a_raced_entrys_sweep_is_its_full_grid_on_its_own_seeds(tmp_path, ablations):
    """W&B sweeps stay grids: an entry that races (declared, and remembered from `run --race` with more
    seeds) is swept, and its points planned, as every variant on the entry's own seeds at the full budget."""
    from mtl.run.layout import remember_racing

    write_entry(ablations, "problem1.raced", grid={"optimizer_lr": [0.01, 0.02]}, seeds=[0, 1], racing={})
    runs_dir = tmp_path / "runs"
    remember_racing(runs_dir / "problem1.raced", {"max_seeds": 4})
    entry = load_entries(ablations)["problem1.raced"]
    assert {r.seed for r in make_plan(entry, "quick", runs_dir).runs} == {0, 1, 2, 3}  # what a race may train
    grid = make_plan(entry, "quick", runs_dir, racing=False)
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(runs_dir), "--out", str(tmp_path / "out")]
    assert main(["sweep", "problem1.raced", "--profile", "quick", *where]) == 0
    sweep = yaml.safe_load((tmp_path / "out" / "problem1.raced.sweep.yaml").read_text())
    assert sweep["parameters"]["seed"] == {"values": [0, 1]} and "early_terminate" not in sweep
    named = [point_config([f"--{k}={v['value']}" for k, v in point.items()], {}).spec.name
             for point in grid_points(sweep)]
    assert sorted(named) == sorted(run.name for run in grid.runs)


def test_the_sweeps_metric_is_the_summary_scalar_the_dashboard_shows(tmp_path, ablations):
    """W&B reads a sweep's metric from the run summary by its flat name (sweeps.SweepRun.summary_metric); the
    summary of val/grader is an object, so the sweep names the best point's grader, as the dashboard does."""
    from sweeps import SweepRun

    from report.dashboard import BEST_GRADER_SUMMARY

    write_entry(ablations, "problem1.graded", grid={"optimizer_lr": [0.01, 0.02]})
    write_entry(ablations, "problem1.by_iou", grid={"optimizer_lr": [0.01, 0.02]}, rank_by={"metric": "val/iou"})
    entries = load_entries(ablations)
    sweep = sweep_config(make_plan(entries["problem1.graded"], "quick", tmp_path), tmp_path)
    assert sweep["metric"] == {"name": BEST_GRADER_SUMMARY, "goal": "maximize"}
    summary = {"val/grader": {"max": 7.5}, "best/grader": 7.5, "best/step": 40}  # what a run's summary holds
    run = SweepRun(summaryMetrics=summary, sampledHistory=[])  # as the sweep controller fills it
    assert run.metric_extremum(sweep["metric"]["name"], "maximum") == 7.5
    with pytest.raises(ValueError, match="finite"):
        run.metric_extremum("val/grader", "maximum")  # the object is no metric to W&B
    other = sweep_config(make_plan(entries["problem1.by_iou"], "quick", tmp_path), tmp_path)
    assert other["metric"] == {"name": "val/iou", "goal": "maximize"}
    assert "val/iou" in metric_note(entries["problem1.by_iou"]) and metric_note(entries["problem1.graded"]) is None


def test_the_printed_agent_command_names_entity_project_and_id(tmp_path, capsys, monkeypatch):
    """The hint parses as wandb's agent parses a sweep path, so the agent finds the sweep as printed."""
    import wandb
    from wandb.sdk.launch.sweeps.utils import parse_sweep_id

    created = []

    class Api:
        settings = {"entity": None}
        default_entity = "me"

    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)  # well-formed, fake; wandb.sweep itself is replaced
    monkeypatch.setattr(wandb, "sweep", lambda sweep, project, entity: created.append((project, entity)) or "abc123")
    monkeypatch.setattr(wandb, "Api", Api)
    where = ["--profile", "quick", "--runs-dir", str(tmp_path)]
    assert main(["sweep", "problem1.optimizer", *where, "--project", "mtl", "--create"]) == 0
    out = capsys.readouterr().out
    assert created == [("mtl", None)]
    assert "start agents in this checkout with `wandb agent me/mtl/abc123`" in out
    parts = {"name": "me/mtl/abc123"}
    assert parse_sweep_id(parts) is None and parts == {"name": "abc123", "project": "mtl", "entity": "me"}
    assert main(["sweep", "problem1.optimizer", *where, "--entity", "team"]) == 0
    assert "`wandb agent team/mtl-ablate/ID` (ID: the one wandb prints)" in capsys.readouterr().out


def test_create_without_credentials_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["sweep", "problem1.optimizer", "--profile", "quick", "--runs-dir", str(tmp_path), "--create"]) == 2
    assert "needs W&B credentials" in capsys.readouterr().err


# ------------------------------------------------------------------------------ end to end
PROFILE = {**{k: v for k, v in TINY.items() if k != "num_threads"}, "num_epochs": 1, "synthetic_num_train": 4,
           "synthetic_num_val": 2, "synthetic_num_test": 2, "synthetic_width": 64, "visualize_num_images": 0}


@pytest.mark.slow
def test_agent_trained_runs_are_the_plans_runs(tmp_path, agent, capsys, cache_dir):
    ablations, runs_dir = tmp_path / "ablations", tmp_path / "runs"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(PROFILE))
    # The entry's own profile is another one: the readers below, given no --profile, must find the
    # profile the agents trained with, as they do after `mtl-ablate run --profile tiny`.
    (ablations / "profiles" / "longer.yaml").write_text(yaml.safe_dump({**PROFILE, "num_epochs": 3}))
    write_entry(ablations, "problem1.pair", base="longer", variants=[
        {"name": "slow", "overrides": {"optimizer_lr": 0.001}}, {"name": "fast", "overrides": {"optimizer_lr": 0.02}}])
    write_entry(ablations, "problem1.next", base="best of problem1.pair", overrides={"batch_size": 1})
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(runs_dir)]

    assert main(["sweep", "problem1.pair", *where, "--profile", "tiny", "--out", str(tmp_path / "sweep")]) == 0
    sweep = yaml.safe_load((tmp_path / "sweep" / "problem1.pair.sweep.yaml").read_text())
    assert sweep["parameters"]["ablations_dir"] == {"value": str(ablations)}
    points = grid_points(sweep)
    assert [p["variant"]["value"] for p in points] == ["slow", "fast"]
    for i, point in enumerate(points):
        assert agent(sweep, point, f"agent{i}") == 0

    local = plan(load_entries(ablations)["problem1.pair"], "tiny", runs_dir)
    for i, spec in enumerate(local):
        config = read_config(spec.run_dir)  # the plan's directory, the agent's W&B run id
        assert (config["wandb_group"], config["wandb_job_type"]) == ("problem1.pair", spec.variant)
        assert config["wandb_run_id"] == f"agent{i}"
        assert read_status(spec.run_dir).state == "finished"
        assert planned_action(spec).kind is ActionKind.SKIP
    traces = {spec.name: (spec.run_dir / "metrics.jsonl").read_bytes() for spec in local}

    capsys.readouterr()
    assert main(["status", "problem1.pair", *where]) == 0
    assert capsys.readouterr().out.count("finished") == 2
    assert main(["run", "problem1.pair", *where, "--devices", "cpu"]) == 0  # nothing left to train
    assert agent(sweep, points[0], "agent-again") == 0  # a finished point is not trained again
    assert traces == {spec.name: (spec.run_dir / "metrics.jsonl").read_bytes() for spec in local}

    following = make_plan(load_entries(ablations)["problem1.next"], "tiny", runs_dir)
    assert following.base.winner.run_dir in {spec.run_dir for spec in local}
    assert main(["report", "problem1.pair", *where, "--out", str(tmp_path / "report"), "--format", "csv",
                 "--no-figures", "--no-cache"]) == 0
    rows = (tmp_path / "report" / "tables" / "problem1.pair.runs.csv").read_text().splitlines()
    assert len(rows) == 3 and {"slow", "fast"} <= {cell for row in rows for cell in row.split(",")}
