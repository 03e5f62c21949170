"""Where ``mtl-ablate run`` starts its trainings: local device slots or SLURM, and the sbatch script a
SLURM dry run prints."""

from __future__ import annotations

from typing import Any

from . import forkserver
from .arguments import UsageError
from .backends import Backend, LocalBackend, parse_devices, placements
from .options import RunOptions
from .planner import Plan
from .scheduler import ActionKind, planned_action
from .slurm import SlurmConfigError, SubmititBackend, options_from_args, sbatch_script


def slurm_options(args: RunOptions) -> Any:
    try:
        return options_from_args(args, args.ablations_dir)
    except SlurmConfigError as exc:
        raise UsageError(str(exc)) from None


def make_backend(args: RunOptions) -> Backend:
    if args.backend == "slurm":
        try:
            # SLURM queues the jobs itself (an entry's runs as one array, capped by --slurm-array-parallelism).
            return SubmititBackend(args.runs_dir / ".submitit", slurm_options(args), cluster="slurm")
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
    try:
        return LocalBackend(placements(parse_devices(args.devices), args.jobs_per_device),
                            fork=not args.fresh_interpreters and forkserver.available())
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def print_sbatch(console: Any, plan: Plan, args: RunOptions) -> None:
    """The sbatch script ``run --backend slurm`` would submit for the plan's runs that need training."""
    launch = [run for run in plan.runs if planned_action(run, args.retry_failed, args.force).kind
              not in (ActionKind.SKIP, ActionKind.LOCKED, ActionKind.REFUSE)]
    if not launch:
        console.print(f"{plan.entry.id}: nothing to submit")
        return
    kind = f"a job array of {len(launch)} runs" if len(launch) > 1 else "one job"
    console.print(f"{plan.entry.id}: sbatch script of {kind} (a run whose recorded job is still queued or running "
                  "is followed instead):", markup=False, highlight=False, soft_wrap=True)
    script = sbatch_script(slurm_options(args), args.runs_dir / ".submitit", plan.entry.id, [r.name for r in launch])
    console.print(script, markup=False, highlight=False, soft_wrap=True)
