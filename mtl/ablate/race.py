"""Racing an entry: what to train next, decided from the recorded traces alone (docs/DESIGN.md §7.2).

Every variant starts with ``min_seeds`` seeds and trains to the first rung (a fraction of the budget,
always under the full budget's learning-rate schedule, so a run continued later is bitwise the run never
stopped). At each rung, the variants the seed-paired test (:mod:`mtl.ablate.decision`) separates from the
rung's leader at ``prune_confidence`` are pruned; a run that diverged takes its variant out. The rest go on
to the next rung, then to the full budget. There the entry is decided, or a seed is added -- one at a
time, in the entry's seed order -- to the leader and to every variant still tied with it that could still
be separated within ``max_seeds`` (a tie that even ``max_seeds`` seeds would leave standing, at the
difference and noise seen so far, is futile and gets no more seeds). It ends ``decided`` or ``undecided``.

:func:`next_step` is a pure function of the runs' validation points: it replays its own earlier decisions
from them each time, so ``mtl-ablate`` can be killed and rerun at any point (nothing is trained twice, the
same decision is reached), two machines racing the same records decide alike, and the replay benchmark
drives it over fully recorded grids without training anything.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mtl.run.model import GRADER_KEY, RunState
from mtl.run.records import read_record, recorded_state
from mtl.run.trace import Line

from .decision import BY_RULE, Decision, Score, compare, decide, leader, pooled_residual_variance, run_score

MAX_RACE_SEEDS = 20


class RaceSettings(BaseModel):
    """How an entry races: an entry's or a profile's ``racing:`` section (every key optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rungs: tuple[float, ...] = Field((0.25, 0.5), description="Fractions of the budget (each in (0, 1)) at which "
                                     "variants clearly behind the leader are pruned.")
    min_seeds: int = Field(3, ge=2, le=MAX_RACE_SEEDS, description="Seeds every variant starts with (two at "
                           "least: one seed says nothing about seed noise; three by default, see BENCHMARKS.md "
                           "'Racing': with two, the variance a test rests on is too rough and races of equal "
                           "variants decide falsely ten times as often).")
    max_seeds: int = Field(5, ge=2, le=MAX_RACE_SEEDS, description="Seeds a variant gets at most, added one at a "
                           "time to the leader and to the variants still tied with it.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence of the decision (one-sided "
                              "seed-paired test of the leader against each other variant).")
    prune_confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence a pruning at a rung needs.")
    budget_seeds: Optional[float] = Field(
        None, gt=0.0, le=MAX_RACE_SEEDS, description="The race's compute, in seeds of the whole grid (1.0: what "
        "training every variant once in full costs). A round that would pass it is not trained: the race ends "
        "undecided, its leader the rule's pick where the race stood. None: no budget.")

    @field_validator("rungs")
    @classmethod
    def _fractions(cls, rungs: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < r < 1.0 for r in rungs):
            raise ValueError(f"every rung is a fraction of the budget in (0, 1), got {list(rungs)}")
        return tuple(sorted(set(rungs)))

    @model_validator(mode="after")
    def _seed_range(self) -> RaceSettings:
        if self.max_seeds < self.min_seeds:
            raise ValueError(f"max_seeds ({self.max_seeds}) is below min_seeds ({self.min_seeds})")
        return self

    def budget_steps(self, variants: int, num_epochs: int, steps_per_epoch: int) -> Optional[int]:
        if self.budget_seeds is None:
            return None
        return int(self.budget_seeds * variants * num_epochs * steps_per_epoch)

    def rung_epochs(self, num_epochs: int) -> list[int]:
        """The epochs of the rungs (distinct, at least 1, before the last), then the last epoch."""
        epochs = sorted({max(1, round(r * num_epochs)) for r in self.rungs} - {num_epochs})
        return [e for e in epochs if e < num_epochs] + [num_epochs]

    def seed_order(self, seeds: Sequence[int]) -> list[int]:
        """The seeds a race uses, in order: the entry's own, then the smallest others, ``max_seeds`` in all."""
        order = list(dict.fromkeys(seeds))[: self.max_seeds]
        candidate = 0
        while len(order) < self.max_seeds:
            if candidate not in order:
                order.append(candidate)
            candidate += 1
        return order


@dataclass(frozen=True)
class RunView:
    """What the records say of one run: its validation lines and how it ended (or stands)."""

    points: tuple[Line, ...] = ()
    state: RunState = RunState.NOT_STARTED

    def epochs_done(self) -> int:
        return max((int(p.get("epoch", 0)) for p in self.points), default=0)

    @property
    def diverged(self) -> bool:
        return self.state is RunState.DIVERGED


@dataclass(frozen=True)
class Train:
    """Train ``variant`` with ``seed`` until ``epoch`` (then it pauses, or finishes at the full budget)."""

    variant: str
    seed: int
    epoch: int


@dataclass
class RaceStep:
    """The race as far as the records go: the runs to train before it can go on (empty when it is over),
    the pruned variants and why, and the decision once it is over."""

    train: list[Train] = field(default_factory=list)
    pruned: dict[str, str] = field(default_factory=dict)  # variant -> why (at which rung, behind whom)
    decision: Optional[Decision] = None
    seeds: dict[str, list[int]] = field(default_factory=dict)  # the seeds each variant trains in this race
    targets: dict[tuple[str, int], int] = field(default_factory=dict)  # (variant, seed) -> epoch it trains to

    @property
    def over(self) -> bool:
        return self.decision is not None


def _table(runs: Mapping[tuple[str, int], RunView], seeds: Mapping[str, Sequence[int]], variants: Sequence[str],
           epoch: int, metric: str, mode: str) -> tuple[dict[str, dict[int, Score]], dict[str, str]]:
    """Each variant's score by seed at ``epoch``, and the variants out because a run of theirs diverged or
    never scored there."""
    table: dict[str, dict[int, Score]] = {}
    out: dict[str, str] = {}
    for variant in variants:
        table[variant] = {}
        for seed in seeds[variant]:
            view = runs.get((variant, seed), RunView())
            if view.diverged and view.epochs_done() < epoch:
                out[variant] = f"diverged (seed {seed}) before epoch {epoch}"
                break
            score = run_score(view.points, epoch, metric, mode)
            if score is None:
                out[variant] = f"no finite {metric} up to epoch {epoch} (seed {seed})"
                break
            table[variant][seed] = score
    return {v: s for v, s in table.items() if v not in out}, out


def _futile(table: Mapping[str, Mapping[int, Score]], top: str, variant: str, settings: RaceSettings,
            metric_name: str) -> bool:
    """Whether more seeds could not separate ``variant`` from ``top``: the t statistic, with the difference
    and pooled variance seen so far, would stay under the critical value even at ``max_seeds`` seeds."""
    (comparison,) = [c for c in compare({top: table[top], variant: table[variant], **{
        v: s for v, s in table.items() if v not in (top, variant)}}, top, settings.confidence, metric_name)
        if c.variant == variant]
    if not math.isfinite(comparison.t) or comparison.difference <= 0:
        return True
    n = len(comparison.seeds)
    _, df = pooled_residual_variance(table, 0 if comparison.key == metric_name else 1)
    more = (settings.max_seeds - n) * max(1, len(table) - 1)  # residual degrees of freedom the seeds would add
    from scipy import stats  # here, not at the top: it is most of a second of every command's start

    critical = stats.t.isf(1.0 - settings.confidence, max(1, df + more))
    return comparison.t * math.sqrt(settings.max_seeds / n) < critical


def next_step(variants: Sequence[str], seed_order: Sequence[int], num_epochs: int,
              runs: Mapping[tuple[str, int], RunView], settings: RaceSettings, metric: str = GRADER_KEY,
              mode: str = "max", metric_name: str = "grader", steps_per_epoch: int = 0) -> RaceStep:
    """Where the race stands given ``runs`` (every run's validation points and state, by (variant, seed)):
    the runs to train next, or the decision. ``seed_order``: the entry's seeds, the first ``min_seeds`` for
    every variant, the next ones added one at a time. ``steps_per_epoch``: what an epoch costs, for
    ``settings.budget_seeds``."""
    if len(seed_order) < settings.min_seeds:
        raise ValueError(f"racing needs at least min_seeds={settings.min_seeds} seeds, the entry has "
                         f"{len(seed_order)}")
    order = list(variants)
    step = RaceStep(seeds={v: list(seed_order[:settings.min_seeds]) for v in order})
    # Variants that cannot run on this machine (skipped here) have no result: named, never compared.
    missing: dict[str, str] = {}
    for v in order:
        for s in step.seeds[v]:
            if runs.get((v, s), RunView()).state is RunState.SKIPPED:
                missing.setdefault(v, f"skipped here (seed {s})")
    alive = [v for v in order if v not in missing]
    rungs = settings.rung_epochs(num_epochs)
    budget = settings.budget_steps(len(order), num_epochs, steps_per_epoch)
    stage: Optional[tuple[int, dict[str, dict[int, Score]]]] = None  # the last epoch every alive run reached

    def over_budget() -> bool:
        """The rounds so far and the one asked for would pass the budget: the race ends where it stands."""
        if budget is None or not step.train:
            return False
        if sum(epoch * steps_per_epoch for epoch in step.targets.values()) <= budget:
            return False
        step.train = []
        step.decision = _budget_decision(stage, order, settings, budget, num_epochs, step.pruned, missing)
        return True

    def need(epoch: int, among: Sequence[str]) -> list[Train]:
        todo = []
        for variant in among:
            for seed in step.seeds[variant]:
                step.targets[(variant, seed)] = max(step.targets.get((variant, seed), 0), epoch)
                view = runs.get((variant, seed), RunView())
                if view.epochs_done() < epoch and not view.diverged and view.state is not RunState.SKIPPED:
                    todo.append(Train(variant, seed, epoch))
        return todo

    for epoch in rungs[:-1]:
        step.train = need(epoch, alive)
        if step.train:
            over_budget()
            return step
        table, out = _table(runs, step.seeds, alive, epoch, metric, mode)
        stage = (epoch, table)
        step.pruned.update(out)
        top = leader({v: s for v, s in table.items() if v not in missing}, order)
        if top is None:
            break
        for comparison in compare(table, top, settings.prune_confidence, metric_name):
            if comparison.separated:
                step.pruned[comparison.variant] = (f"behind {top} at epoch {epoch}/{num_epochs}: "
                                                   f"{comparison.describe()}")
        alive = [v for v in alive if v not in step.pruned and v not in missing]

    # The full budget: every variant still in the running is compared with the leader on all its seeds each
    # round; only the leader and the hopeful ties get another seed.
    while True:
        step.train = need(num_epochs, alive)
        if step.train:
            over_budget()
            return step
        table, out = _table(runs, step.seeds, alive, num_epochs, metric, mode)
        stage = (num_epochs, table)
        step.pruned.update(out)
        alive = [v for v in alive if v not in out]
        decision = decide({v: table[v] for v in alive}, order, settings.confidence, metric_name, out=step.pruned,
                          missing=missing)
        if decision.decided or decision.winner is None:
            step.decision = decision
            return step
        top = decision.winner
        limit = min(settings.max_seeds, len(seed_order))
        hopeful = [v for v in decision.tied
                   if len(step.seeds[v]) < limit and not _futile(table, top, v, settings, metric_name)]
        if not hopeful:
            step.decision = decision
            return step
        for variant in [top, *hopeful]:  # one more seed for each: the next of the entry's order it lacks
            if len(step.seeds[variant]) < limit:
                step.seeds[variant].append(next(s for s in seed_order if s not in step.seeds[variant]))


def _budget_decision(stage: Optional[tuple[int, dict[str, dict[int, Score]]]], order: Sequence[str],
                     settings: RaceSettings, budget: int, num_epochs: int, out: Mapping[str, str],
                     missing: Mapping[str, str]) -> Decision:
    """The answer of a race its budget ended: undecided, the leader by the rule where every run still in the
    running stood (no winner when the budget did not cover the first rung)."""
    if stage is None:
        note = f"the budget of {budget} optimizer steps does not cover the first rung"
        return Decision(BY_RULE, None, settings.confidence, out=out, missing=missing, note=note)
    epoch, table = stage
    scored = {v: s for v, s in table.items() if v not in out and v not in missing}
    note = f"the budget of {budget} optimizer steps ended the race at epoch {epoch}/{num_epochs}"
    decision = decide(scored, order, settings.confidence, out=out, missing=missing)
    return dataclasses.replace(decision, note=note)


# ---------------------------------------------------------------------------------------- replay
@dataclass(frozen=True)
class RecordedRun:
    """A run recorded in full: its validation lines, the optimizer steps at the end of each epoch, and, for a
    run that diverged, the step it diverged at (its trace ends there)."""

    points: tuple[Line, ...]
    steps_at_epoch: Mapping[int, int]
    diverged_step: Optional[int] = None

    def view(self, epoch: int) -> RunView:
        """The run as it stands when trained to ``epoch``."""
        points = tuple(p for p in self.points if p.get("epoch", 0) <= epoch)
        last = max((int(p.get("epoch", 0)) for p in self.points), default=0)
        if self.diverged_step is not None and last < epoch:
            return RunView(points, RunState.DIVERGED)
        return RunView(points, RunState.FINISHED if epoch >= last else RunState.INTERRUPTED)

    def steps_until(self, epoch: int) -> int:
        """Optimizer steps to train this run to ``epoch`` from scratch (to its divergence, if it diverges first)."""
        known = [e for e in self.steps_at_epoch if e <= epoch]
        steps = self.steps_at_epoch[max(known)] if known else 0
        if self.diverged_step is not None and max(self.steps_at_epoch, default=0) < epoch:
            steps = max(steps, self.diverged_step)
        return steps


@dataclass
class Replay:
    """What a race over recorded runs decided and what it cost, in optimizer steps."""

    step: RaceStep
    steps: int
    trained: dict[tuple[str, int], int]  # (variant, seed) -> the epoch it was trained to


def replay(variants: Sequence[str], seed_order: Sequence[int], num_epochs: int,
           recorded: Mapping[tuple[str, int], RecordedRun], settings: RaceSettings, metric: str = GRADER_KEY,
           mode: str = "max", metric_name: str = "grader") -> Replay:
    """Race over fully recorded runs: each "training" reveals a run's recorded points up to the epoch asked
    for, and costs the steps between where it stood and there. Nothing is trained."""
    trained: dict[tuple[str, int], int] = {}
    steps_per_epoch = max((run.steps_at_epoch.get(1, 0) for run in recorded.values()), default=0)
    while True:
        views = {key: recorded[key].view(epoch) for key, epoch in trained.items()}
        step = next_step(variants, seed_order, num_epochs, views, settings, metric, mode, metric_name,
                         steps_per_epoch)
        if step.over:
            steps = sum(recorded[key].steps_until(epoch) for key, epoch in trained.items())
            return Replay(step, steps, trained)
        for train in step.train:
            key = (train.variant, train.seed)
            if key not in recorded or trained.get(key, 0) >= train.epoch:
                raise ValueError(f"the race asks for {train.variant} seed {train.seed} to epoch {train.epoch}, "
                                 "which the records do not hold")
            trained[key] = train.epoch


def view_of(run_dir: Path) -> RunView:
    """A run as the race sees it from its records: its validation lines and its state."""
    record = read_record(run_dir)
    return RunView(points=tuple(record.points), state=recorded_state(run_dir))
