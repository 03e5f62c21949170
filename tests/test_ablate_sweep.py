"""W&B sweeps: one sweep per entry whose grid points, launched as ``wandb agent`` launches them, train
exactly the runs of the local plan, where ``status``, ``report``, ``best of`` and ``run`` find them.

The points come from the ``sweeps`` package (the grid controller W&B runs), and each is launched by wandb's
own agent code (``Agent._command_run`` of the pinned wandb 0.31: it builds the command from the sweep's
``command``, ``program`` and the point's ``${args}``, and starts it); only the server is missing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from sweeps import SweepConfig, next_runs, schema_violations_from_proposed_config

from mtl.ablate.entry import load_entries
from mtl.ablate.planner import make_plan, plan
from mtl.ablate.scheduler import ActionKind, planned_action
from mtl.ablate.sweep import COMMAND, PROGRAM, metric_note, sweep_config
from mtl.ablate.sweep_run import PLACE_KEYS, SweepPointError, point_config
from mtl.ablate.sweep_run import main as sweep_run_main
from mtl.config import Config
from mtl.run.records import read_config, read_status
from mtl.suite import main
from planting import placeholder_submission
from support import ABLATIONS, REPO, TINY, write_entry
from test_ablate_planner import plant_run


def grid_points(config: dict, validate: bool = True) -> list[dict]:
    """Every parameter set the W&B grid controller proposes, as the agent receives them ({key: {value}}).

    ``validate``: check the config against the sweeps package's schema first (once: it takes seconds). The
    controller is asked for every point at once: one by one, each answer hashes every earlier point again, and
    the order is the same (the grid's, skipping the points it gave)."""
    if validate:
        SweepConfig(config)
    proposed = next_runs(config, [], n=sys.maxsize)  # the points, then None once the grid is exhausted
    assert proposed[-1] is None
    return [run.config for run in proposed[:-1]]


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


# ------------------------------------------------------------------------------ one W&B run per run directory
WANDB_PROFILE = {**PROFILE, "num_epochs": 2, "checkpoint_interval_steps": 1, "wandb_mode": "auto",
                 "wandb_system_metrics": False, "wandb_console": False}


def offline_wandb(monkeypatch, home: Path) -> None:
    """W&B offline with a well-formed fake key, its server an address that answers nothing."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "wandb-config"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")


def plant_finished(spec, graders: list[float], wandb_run_id: str) -> Path:
    """A finished run of ``spec`` as the trainer leaves it, its W&B run recorded (no training)."""
    from mtl.run.layout import RunDirectory
    from mtl.run.summary import write_run_summary

    run = RunDirectory(spec.run_dir)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    run.config_path.write_text(spec.config.to_yaml(exclude=("log_dir",)))
    points = []
    for epoch, grader in enumerate(graders, start=1):
        points.append({"step": 2 * epoch, "epoch": epoch, "time": 1.0, "train/loss": 1.0 / epoch})
        points.append({"step": 2 * epoch, "epoch": epoch, "time": 1.0, "val/grader": grader, "val/iou": 10.0 + epoch,
                       "val/si_logrmse": 50.0 - grader})
    run.metrics.write_text("".join(json.dumps(p) + "\n" for p in points))
    best = max((p for p in points if "val/grader" in p), key=lambda p: p["val/grader"])
    status = {"state": "finished", "epoch": len(graders), "step": 2 * len(graders), "num_epochs": len(graders),
              "best": {"step": best["step"], "epoch": best["epoch"], "grader": best["val/grader"],
                       "iou": best["val/iou"], "si_logrmse": best["val/si_logrmse"]},
              "model": {"params": 100, "gflops": 1.5}, "wandb_run_id": wandb_run_id}
    status["submission"] = placeholder_submission(spec.run_dir, b"planted").model_dump()
    run.status_path.write_text(json.dumps(status))
    write_run_summary(run)
    return spec.run_dir


def trace_rows(run_dir: Path) -> list[dict]:
    """The run's trace as W&B rows: each point without step and time, its step as trainer/step."""
    points = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [{**{k: v for k, v in p.items() if k not in ("step", "time")}, "trainer/step": p["step"]} for p in points]


@pytest.mark.slow
def test_a_run_stopped_under_run_and_finished_by_an_agent_is_one_wandb_run(tmp_path, agent, monkeypatch, cache_dir):
    """`mtl-ablate run` starts a run and is stopped (Ctrl-C) after its first epoch; a sweep agent's point, launched
    by wandb's own agent code with $WANDB_RUN_ID, resumes and finishes it; another point names a run another
    entry finished. Read back with wandb's protobuf records: the agent's W&B run carries the whole history and
    summary and names the first one, which ended preempted; the reused run's point got a complete W&B run too.
    Then `report --wandb` on those runs (and a stale-profile run) gives the local report's rows and winner."""
    import signal
    import subprocess

    import pandas as pd

    from mtl.run.layout import remember_profile
    from report import commands
    from wandb_fake import FakeWandbApi, FakeWandbRun
    from wandb_records import offline_runs

    offline_wandb(monkeypatch, tmp_path / "home")
    ablations, runs_dir = tmp_path / "ablations", tmp_path / "runs"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(WANDB_PROFILE))
    (ablations / "profiles" / "short.yaml").write_text(yaml.safe_dump({**WANDB_PROFILE, "num_epochs": 1}))
    write_entry(ablations, "problem1.base", base="tiny", grid={"optimizer_lr": [0.02]})
    write_entry(ablations, "problem1.pair", base="tiny", grid={"optimizer_lr": [0.01, 0.02]})
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(runs_dir)]
    entries = load_entries(ablations)
    (reusable,) = make_plan(entries["problem1.base"], "tiny", runs_dir).runs
    base_dir = plant_finished(reusable, [3.0, 9.0], "base0001")  # another entry's identical run, finished
    stale = plant_finished(make_plan(entries["problem1.pair"], "short", runs_dir).runs[0], [40.0], "stale001")
    remember_profile(runs_dir / "problem1.base", "tiny")
    own, reused = make_plan(entries["problem1.pair"], "tiny", runs_dir).runs
    assert reused.run_dir == base_dir and own.reused_from is None

    # Outside any agent: none of the variables the agent fixture sets for its points.
    agent_only = ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")
    shell = {k: v for k, v in os.environ.items() if k not in agent_only}
    first = subprocess.Popen([sys.executable, "-m", "mtl.suite", "run", "problem1.pair", "--profile", "tiny",
                              "--devices", "cpu", *where], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True, env=shell)
    from support import wait_for_epoch

    wait_for_epoch(own.run_dir, first)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the run checkpoints and ends interrupted
    output = first.communicate(timeout=300)[0]
    assert read_status(own.run_dir).state == "interrupted", output
    started_by_run = read_status(own.run_dir).wandb_run_id

    assert main(["sweep", "problem1.pair", *where, "--profile", "tiny", "--out", str(tmp_path / "sweep")]) == 0
    sweep = yaml.safe_load((tmp_path / "sweep" / "problem1.pair.sweep.yaml").read_text())
    points = grid_points(sweep)
    assert [p["optimizer_lr"]["value"] for p in points] == [0.01, 0.02]
    # `wandb agent ENTITY/PROJECT/ID` sets them for its runs (wandb_agent.run_agent), and wandb.init takes the
    # project and run id from there in a sweep, whatever it is given (wandb_init.clear_run_path_if_sweep_or_launch).
    monkeypatch.setenv("WANDB_PROJECT", sweep["project"])
    monkeypatch.setenv("WANDB_ENTITY", "team")
    for i, point in enumerate(points):
        assert agent(sweep, point, f"agentpoint{i}") == 0
    status = read_status(own.run_dir)
    assert status.state == "finished" and status.wandb_run_id == "agentpoint0"

    wandb_runs = offline_runs(runs_dir)
    assert set(wandb_runs) == {started_by_run, "agentpoint0", "agentpoint1"}
    assert {run.project for run in wandb_runs.values()} == {"mtl-ablate"}  # the sweep's project is the runs' own
    stopped, carried, mirrored = (wandb_runs[k] for k in (started_by_run, "agentpoint0", "agentpoint1"))
    assert stopped.state == "preempted" and stopped.exit_codes == [143]
    # The agent's run: the whole trace, point for point, and the summary of the records.
    assert carried.state == "finished" and carried.config["continues_run_id"] == started_by_run
    assert carried.rows() == trace_rows(own.run_dir)
    best, model = status.best.model_dump(), status.model
    assert {k: carried.summary[f"best/{k}"] for k in best} == best
    assert (carried.summary["model/params"], carried.summary["model/gflops"]) == (model.params, model.gflops)
    assert carried.summary["val/grader"] == {"max": best["grader"]}
    # The reused run's point: the finished run mirrored into the agent's run, in this entry's group.
    assert (mirrored.state, mirrored.group, mirrored.config["continues_run_id"]) == ("finished", "problem1.pair",
                                                                                    "base0001")
    assert mirrored.rows() == trace_rows(base_dir) and mirrored.summary["best/grader"] == 9.0
    assert read_status(base_dir).wandb_run_id == "agentpoint1"

    # report --wandb against an API that holds these runs (and the W&B runs of the planted ones).
    listed = [r.fake() for r in wandb_runs.values()]
    listed += [FakeWandbRun.from_run_dir(d, project="mtl-ablate") for d in (base_dir, stale)]
    for run in listed:
        run.entity = "team"
    api = FakeWandbApi(listed)
    monkeypatch.setattr("wandb.Api", lambda *args, **kwargs: api)
    report = ["report", "problem1.pair", *where, "--format", "csv", "--no-figures", "--no-cache"]
    assert commands.main([*report, "--out", str(tmp_path / "local")]) in (0, 1)
    assert commands.main([*report, "--out", str(tmp_path / "online"), "--wandb", "team/mtl-ablate"]) in (0, 1)
    tables = {}
    for where_from in ("local", "online"):
        runs = pd.read_csv(tmp_path / where_from / "tables" / "problem1.pair.runs.csv")
        tables[where_from] = runs.drop(columns=[c for c in ("url",) if c in runs])
    assert len(tables["local"]) == 2 and stale.name not in set(tables["local"]["run"])
    assert list(tables["local"]["winner"].fillna("")) == ["", "by rule only"]  # one seed: a winner by rule
    pd.testing.assert_frame_equal(tables["online"], tables["local"])


def start_point(sweep: dict, point: dict, run_id: str):
    """A point started as ``wandb agent`` starts it (wandb's Agent._command_run); returns the agent and its process."""
    from wandb.wandb_agent import Agent

    runner = Agent(api=None, queue=None, sweep_id="sweep1")
    runner._sweep_command = sweep["command"]
    runner._command_run({"type": "run", "run_id": run_id, "program": sweep["program"], "args": point})
    return runner, runner._run_processes[run_id]


def wait_for_checkpoint_after_epoch(run_dir: Path, process, timeout: float = 300, epoch: int = 1) -> None:
    """Wait until the run, trained by ``process``, has checkpointed epoch ``epoch``."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status = read_status(run_dir)
        except ValueError:
            status = None
        if status is not None and status.state == "running" and status.epoch >= epoch and (run_dir / "checkpoints"
                                                                                          / "last.pt").exists():
            return
        assert process.poll() is None, "the point ended before its first epoch"
        time.sleep(0.2)
    pytest.fail(f"{run_dir.name} never finished an epoch")


@pytest.mark.slow
def test_a_run_its_sweep_stops_ends_stopped_and_a_preempted_one_asks_to_be_requeued(tmp_path, agent, monkeypatch,
                                                                                    cache_dir):
    """The agent stops a run (its sweep's early termination: wandb's Agent._command_stop, SIGTERM to the
    program alone): the run ends interrupted with its checkpoint, the program exits 0, and W&B gets no
    preempting mark, so the sweep does not requeue it. Resumed by another point and then stopped as a cluster
    stops a job (SIGTERM to every process, wandb's service in its own session too): the run's end is kept in
    W&B, marked preempting, exit 143."""
    import signal

    import fake_slurm
    from wandb_records import OfflineRun, offline_runs

    offline_wandb(monkeypatch, tmp_path / "home")
    ablations, runs_dir = tmp_path / "ablations", tmp_path / "runs"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump({**WANDB_PROFILE, "num_epochs": 4}))
    write_entry(ablations, "problem1.stop", base="tiny", grid={"optimizer_lr": [0.01]})
    where = ["--ablations-dir", str(ablations), "--runs-dir", str(runs_dir)]
    assert main(["sweep", "problem1.stop", *where, "--profile", "tiny", "--out", str(tmp_path / "sweep")]) == 0
    sweep = yaml.safe_load((tmp_path / "sweep" / "problem1.stop.sweep.yaml").read_text())
    monkeypatch.setenv("WANDB_PROJECT", sweep["project"])
    (point,) = grid_points(sweep)
    (spec,) = make_plan(load_entries(ablations)["problem1.stop"], "tiny", runs_dir).runs

    python = tmp_path / "bin" / "python"  # the agent's interpreter: `python` on PATH (see the agent fixture)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    runner, process = start_point(sweep, point, "early1")
    wait_for_checkpoint_after_epoch(spec.run_dir, process)
    runner._command_stop({"run_id": "early1"})  # what the agent does when its sweep stops the run
    assert process.wait(timeout=300) == 0
    status = read_status(spec.run_dir)
    assert status.state == "interrupted" and "SIGUSR1 (its W&B sweep stopped it)" in status.error
    assert (spec.run_dir / "checkpoints" / "last.pt").exists()
    stopped = offline_runs(spec.run_dir)["early1"]
    assert (stopped.preempting, stopped.exit_codes) == (False, [143])

    runner, process = start_point(sweep, point, "again2")  # a later point carries it on
    wait_for_checkpoint_after_epoch(spec.run_dir, process, epoch=status.epoch + 1)
    tree = fake_slurm.process_tree(process._popen.pid)
    sessions = {fake_slurm.session_of(pid) for pid, _ in tree}
    assert len(sessions) >= 2  # wandb's service runs in a session of its own
    fake_slurm.signal_processes(tree, signal.SIGTERM)  # as a cluster stops a job
    assert process.wait(timeout=300) == 0
    status = read_status(spec.run_dir)
    assert status.state == "interrupted" and status.wandb_run_id == "again2"
    preempted = offline_runs(spec.run_dir)["again2"]
    assert preempted.config["continues_run_id"] == "early1"
    # wandb's service died with the job; the mirror restarted offline, and its files hold the run's end and,
    # again, the whole trace (what the dead service had not written is lost with it).
    assert len(preempted.files) == 2
    restarted = OfflineRun("again2")
    restarted.add_file(preempted.files[-1])
    assert restarted.preempting and restarted.exit_codes == [143] and restarted.state == "preempted"
    assert restarted.rows() == trace_rows(spec.run_dir)
