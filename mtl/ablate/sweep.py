"""An entry as one W&B grid sweep, so agents on any number of machines can train its runs.

The sweep's program is :mod:`mtl.ablate.sweep_run`: given the entry, its profile and one point of the
grid, it plans the entry exactly as ``mtl-ablate run`` does and trains the one planned run the point
names, in that run's own directory (``<runs>/<entry id>/<variant>-s<seed>-<hash>``) and with its W&B
group and job type. A run is therefore trained once, by an agent or by ``mtl-ablate run``, whichever
comes first, and ``status``, ``report`` and ``best of`` read agent-trained runs like any other.

A sweep is always the entry's full grid: the writer and the program plan it without racing
(``make_plan(..., racing=False)``), whatever the entry, its profile or its last ``run`` race with. A W&B
grid cannot add seeds or prune at rungs; a raced entry is raced by ``mtl-ablate run --race``, and its
sweep trains every variant on the entry's own seeds at the full budget.

Parameters, as a W&B user reads them in the sweep:
- swept: ``variant`` (an entry with named variants) or the grid keys with their resolved values, and
  ``seed``; the sweep's grid is the entry's runs, each once;
- constant (``{value: ...}``): ``entry``, ``profile``, ``runs_dir`` (and ``ablations_dir`` when it is not
  the default), then every hyperparameter that all runs share. The program checks those against its own
  plan, so a sweep written before the entry or its ``best of`` base changed refuses to train a config
  other than the one it shows. Keys that differ between named variants follow from ``variant``.

``${interpreter}`` is the agent's ``python`` on PATH and ``-m`` imports the package from the agent's
working directory, as ``python -m mtl.cli`` does: start ``wandb agent`` in the checkout, with its
environment active. A relative ``runs_dir`` is relative to that directory too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import yaml

from mtl.run.model import GRADER_KEY

from .planner import Plan

PROGRAM = "mtl/ablate/sweep_run.py"
PROGRAM_MODULE = "mtl.ablate.sweep_run"
COMMAND = ["${env}", "${interpreter}", "-m", PROGRAM_MODULE, "${args}"]
DEFAULT_PROJECT = "mtl-ablate"  # the trainer's default W&B project, so the sweep and its runs meet


class MissingCredentials(RuntimeError):
    """``--create`` without W&B credentials."""


def _distinct(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def swept_parameters(plan: Plan) -> dict[str, Any]:
    """The parameters that pick a run: the variant name or the grid keys, and the seed."""
    entry = plan.entry
    parameters: dict[str, Any] = {}
    if entry.grid is not None:
        for key in entry.grid:
            parameters[key] = {"values": _distinct([run.config.hyperparameters()[key] for run in plan.runs])}
    elif entry.variants is not None:
        parameters["variant"] = {"values": [variant.name for variant in entry.variants]}
    parameters["seed"] = {"values": _distinct([run.seed for run in plan.runs])}  # the plan's seeds: a grid's
    return parameters


def shared_hyperparameters(plan: Plan, skip: set[str]) -> dict[str, Any]:
    """The hyperparameters (seed and ``skip`` aside) with one value in every run of the plan, in schema order."""
    dumps = [run.config.hyperparameters() for run in plan.runs]
    return {
        key: value for key, value in dumps[0].items()
        if key != "seed" and key not in skip and all(d[key] == value for d in dumps[1:])
    }


def sweep_config(
    plan: Plan,
    runs_dir: str | Path,
    ablations_dir: Optional[str | Path] = None,
    project: Optional[str] = None,
    entity: Optional[str] = None,
) -> dict[str, Any]:
    """The W&B sweep config (grid method) of a resolved plan; ``ablations_dir`` None: the agent's default."""
    if not plan.resolved:
        raise RuntimeError(f"cannot write a sweep for {plan.entry.id}: its base is unresolved ({plan.base.unresolved})")
    entry = plan.entry
    swept = swept_parameters(plan)
    place = {"entry": {"value": entry.id}, "profile": {"value": plan.base.profile},
             "runs_dir": {"value": str(runs_dir)}}
    if ablations_dir is not None:
        place["ablations_dir"] = {"value": str(ablations_dir)}
    constants = {k: {"value": v} for k, v in shared_hyperparameters(plan, set(swept)).items()}
    config: dict[str, Any] = {
        "name": entry.id,
        "description": " ".join(entry.question.split()),
        "project": project or plan.runs[0].config.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
    }
    if entity:
        config["entity"] = entity
    config.update({
        "program": PROGRAM,
        "method": "grid",
        "metric": sweep_metric(entry),
        "parameters": {**place, **swept, **constants},
        "command": list(COMMAND),
    })
    return config


def sweep_metric(entry: Any) -> dict[str, str]:
    """The sweep's metric: a scalar of the run summary (W&B reads a sweep's metric from there, by its flat
    name). For the default ranking (the highest val/grader) it is the best point's grader, the same scalar the
    dashboards show; for another ``rank_by`` it is that metric's summary, its last value, which
    :func:`metric_note` says."""
    from mtl.train.tracking import BEST_GRADER_SUMMARY

    rank = entry.rank_by
    goal = "maximize" if rank.mode == "max" else "minimize"
    if (rank.metric, rank.mode) == (GRADER_KEY, "max"):
        return {"name": BEST_GRADER_SUMMARY, "goal": goal}
    return {"name": rank.metric, "goal": goal}


def metric_note(entry: Any) -> Optional[str]:
    """What the sweep's metric is not, when the entry ranks by another metric than the grader."""
    rank = entry.rank_by
    if (rank.metric, rank.mode) == (GRADER_KEY, "max"):
        return None
    return (f"W&B ranks the sweep's runs by {rank.metric} in their summaries, its last value; the entry ranks "
            f"a run by its {'highest' if rank.mode == 'max' else 'lowest'} value (report and best of)")


def agent_command(sweep_id: str, entity: Optional[str], project: str) -> str:
    """``wandb agent ENTITY/PROJECT/ID``: with the entity and project in the path, the agent finds the sweep
    wherever wandb's settings point (given the bare ID, it looks in the settings' project)."""
    return f"wandb agent {entity or 'ENTITY'}/{project}/{sweep_id}"


def write_sweep(config: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{config['name']}.sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, width=120))
    return path


def create_sweep(config: dict[str, Any]) -> tuple[str, Optional[str]]:
    """Register the sweep with W&B (needs credentials); returns its id and the entity it went to (the given
    one, else wandb's settings' or the account's default, as ``wandb.sweep`` picks it)."""
    from mtl.train.tracking import has_wandb_credentials

    if not has_wandb_credentials():
        raise MissingCredentials("--create needs W&B credentials (WANDB_API_KEY or `wandb login`); none were found")
    import wandb

    sweep_id = wandb.sweep(sweep=config, project=config["project"], entity=config.get("entity"))
    api = wandb.Api()
    return sweep_id, config.get("entity") or api.settings["entity"] or api.default_entity
