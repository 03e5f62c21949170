"""An entry as W&B grid sweeps, so agents on any number of machines can run it.

The swept parameters are the entry's grid keys (values resolved against the base, as in a local run)
and ``seed``; every other key of the resolved config is passed as a fixed ``--key=value`` argument, so
an agent's command line parses (through ``mtl.config``) into exactly the config a local run gets. An
entry with explicit variants becomes one sweep per variant, since a W&B grid can only express a
cartesian product.

Each agent run gets its own run directory, ``${MTL_RUNS_DIR:-runs}/<entry id>/sweeps/$WANDB_RUN_ID``
(the agent sets ``WANDB_RUN_ID`` for the process), and continues that W&B run if it is resumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from mtl.config import Config, cli_args

from .planner import Plan

# Keys an agent run must not take from the local plan: its own directory and W&B run id come from the agent.
PER_AGENT_RUN_KEYS = ("log_dir", "wandb_run_id")
class MissingCredentials(RuntimeError):
    """``--create`` without W&B credentials."""


LAUNCH_SCRIPT = (
    'exec "$0" -m mtl.cli '
    '--log_dir="${{MTL_RUNS_DIR:-runs}}/{entry_id}/sweeps/$WANDB_RUN_ID" --wandb_run_id="$WANDB_RUN_ID" "$@"'
)


def _json_value(config: Config, key: str) -> Any:
    return config.model_dump(mode="json")[key]


def sweep_configs(plan: Plan) -> dict[str, dict[str, Any]]:
    """Sweep name -> W&B sweep config (grid method) for a resolved plan."""
    if not plan.resolved:
        raise RuntimeError(f"cannot write a sweep for {plan.entry.id}: its base is unresolved ({plan.base.unresolved})")
    entry = plan.entry
    goal = "maximize" if entry.rank_by.mode == "max" else "minimize"
    if entry.grid is not None:
        groups = {entry.id: (list(entry.grid), plan.runs)}
    else:
        groups = {}
        for run in plan.runs:
            name = entry.id if entry.variants is None else f"{entry.id}.{run.variant}"
            groups.setdefault(name, ([], []))[1].append(run)
    sweeps = {}
    for name, (swept_keys, runs) in groups.items():
        parameters: dict[str, Any] = {}
        for key in swept_keys:
            values = []
            for run in runs:
                value = _json_value(run.config, key)
                if value not in values:
                    values.append(value)
            parameters[key] = {"values": values}
        parameters["seed"] = {"values": list(entry.seeds)}
        first = runs[0].config
        if entry.grid is not None:
            first = first.replace(wandb_job_type=None)  # the variant is the grid point, not one name
        fixed_keys = [k for k in Config.model_fields if k not in parameters and k not in PER_AGENT_RUN_KEYS]
        sweeps[name] = {
            "name": name,
            "description": " ".join(entry.question.split()),
            "method": "grid",
            "metric": {"name": entry.rank_by.metric, "goal": goal},
            "parameters": parameters,
            "command": [
                "${env}",
                "sh",
                "-c",
                LAUNCH_SCRIPT.format(entry_id=entry.id),
                "${interpreter}",
                *cli_args(first, fixed_keys),
                "${args}",
            ],
        }
    return sweeps


def write_sweeps(plan: Plan, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, config in sweep_configs(plan).items():
        path = out_dir / f"{name}.sweep.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False, width=120))
        paths.append(path)
    return paths


def create_sweeps(plan: Plan, project: Optional[str], entity: Optional[str]) -> list[str]:
    """Register the sweeps with W&B (needs credentials); returns the sweep ids."""
    from mtl.tracking import has_wandb_credentials

    if not has_wandb_credentials():
        raise MissingCredentials("--create needs W&B credentials (WANDB_API_KEY or `wandb login`); none were found")
    import wandb

    ids = []
    for config in sweep_configs(plan).values():
        ids.append(wandb.sweep(sweep=config, project=project, entity=entity))
    return ids
