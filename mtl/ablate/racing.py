"""Running a race (docs/DESIGN.md §7.2): each round asks the policy (:func:`mtl.ablate.planner.race_step`, a
pure function of the records) what to train next, trains it through the scheduler -- a run that stops at a
rung is launched with ``stop_after_epoch`` and pauses there with its checkpoint -- and records the variants
the race left behind as ``pruned``. Killed and started again at any point, it reads the same records and
carries on where they stand: nothing is trained twice, the same decision is reached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Optional

from mtl.run.errors import RunLocked
from mtl.run.layout import RunDirectory
from mtl.run.model import RunState
from mtl.run.records import recorded_state
from mtl.run.status import StatusWriter

from .compute import planned_steps, spent
from .planner import Plan, RunSpec, race_step
from .race import RaceStep, Train
from .scheduler import RunOutcome, Scheduler
from .steps import steps_per_epoch


@dataclass
class RaceRun:
    """How a race ended in this call: its last step (a decision once over), every launch's outcome, and why
    it stopped early (a stop signal, a run without a result, the budget)."""

    step: RaceStep
    outcomes: list[RunOutcome] = field(default_factory=list)
    stopped: Optional[str] = None


def launch_spec(spec: RunSpec, epoch: int) -> RunSpec:
    """``spec`` trained to ``epoch``: paused there (a rung), or to the end at the full budget."""
    num_epochs = spec.config.num_epochs
    return dataclasses.replace(spec, config=spec.config.replace(stop_after_epoch=epoch if epoch < num_epochs else 0))


def mark_pruned(plan: Plan, step: RaceStep) -> list[tuple[RunSpec, str]]:
    """Record the pruned variants' paused runs as pruned (with why), holding each run's lock; returns the
    runs marked now and why. A run another process holds is left for the next look."""
    by_key = {(run.variant, run.seed): run for run in plan.runs}
    marked = []
    for variant, reason in step.pruned.items():
        for seed in step.seeds.get(variant, []):
            run = by_key.get((variant, seed))
            if run is None or recorded_state(run.run_dir) is not RunState.PAUSED:
                continue
            try:
                with RunDirectory(run.run_dir).exclusive():
                    StatusWriter(RunDirectory(run.run_dir)).pruned(reason=reason)
            except RunLocked:
                continue
            marked.append((run, reason))
    return marked


def describe_round(trains: list[Train], num_epochs: int) -> str:
    by_epoch: dict[int, list[str]] = {}
    for train in trains:
        by_epoch.setdefault(train.epoch, []).append(f"{train.variant} s{train.seed}")
    parts = [f"to epoch {epoch}/{num_epochs}: {', '.join(runs)}" for epoch, runs in sorted(by_epoch.items())]
    return "; ".join(parts)


def race(plan: Plan, scheduler: Scheduler, say: Callable[[str], None], budget: Optional[int] = None) -> RaceRun:
    """Race ``plan`` to its decision (or until a run fails, a stop signal arrives or ``budget`` optimizer
    steps would be exceeded by the next round)."""
    assert plan.racing is not None
    entry_id = plan.entry.id
    specs = {(run.variant, run.seed): run for run in plan.runs}
    num_epochs = plan.runs[0].config.num_epochs
    result = RaceRun(step=race_step(plan))
    while True:
        step = result.step
        for run, reason in mark_pruned(plan, step):
            say(f"{entry_id} {run.variant} s{run.seed}: pruned, {reason}")
        if step.over:
            return result
        launches = [launch_spec(specs[(t.variant, t.seed)], t.epoch) for t in step.train]
        if budget is not None:
            needed = spent(plan).steps + planned_steps(launches)
            if needed > budget:
                result.stopped = (f"the next round would bring the entry to {needed} optimizer steps, over the "
                                  f"budget of {budget}")
                return result
        say(f"{entry_id}: race round: {describe_round(step.train, num_epochs)}")
        outcomes = scheduler.run(launches)
        result.outcomes += outcomes
        if scheduler.stop_signal is not None:
            result.stopped = "stopped by a signal"
            return result
        failed = [o for o in outcomes if not o.state.has_result]
        if failed:
            result.stopped = f"{len(failed)} run(s) ended without a result ({failed[0].spec.name}: {failed[0].state})"
            return result
        result.step = race_step(plan)


def describe_racing(plan: Plan) -> str:
    """The race's settings in words, with the epochs of its rungs."""
    settings = plan.racing
    assert settings is not None
    num_epochs = plan.runs[0].config.num_epochs
    rungs = ", ".join(str(e) for e in settings.rung_epochs(num_epochs)[:-1]) or "none"
    variants = len({run.variant for run in plan.runs})
    budget = settings.budget_steps(variants, num_epochs, steps_per_epoch(plan.runs[0].config))
    return (f"racing: rungs at epochs {rungs} of {num_epochs}, {settings.min_seeds} to {settings.max_seeds} seeds a "
            f"variant (seeds {', '.join(map(str, settings.seed_order(plan.entry.seeds)))}), pruning at "
            f"{100 * settings.prune_confidence:g}% and deciding at {100 * settings.confidence:g}% confidence"
            + (f", a budget of {budget} optimizer steps ({settings.budget_seeds:g} seeds of the grid)"
               if budget is not None else ""))
