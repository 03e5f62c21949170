"""From a validated entry to fully resolved run specs.

The config of a run is layered: Config defaults < profile < the winner of the ``best of`` entry (its
resolved hyperparameters, read from its run records) < the entry's overrides < the variant or grid
point < seed. Run-invariant keys (paths, devices, W&B settings) never come from the winner, so the
profile still decides where and how a run executes. The run directory is
``<runs>/<entry id>/<variant>-s<seed>-<config hash>``: the same config always lands in the same place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mtl.config import BOTH_TASKS, RUN_INVARIANT_KEYS, Config, ConfigError, make_config, quoted
from mtl.run.best import deciding_rule
from mtl.run.errors import RecordError
from mtl.run.layout import RunDirectory, parse_run_name, remembered_profile, remembered_racing, run_name
from mtl.run.model import GRADER_KEY, RunState
from mtl.run.records import error_of, is_finished, read_config, read_record, read_status, recorded_state

from .arguments import command_line
from .decision import Decision, Score, decide, mean_rank, run_score
from .entry import (
    Entry,
    EntryError,
    base_chain,
    entry_path,
    load_entry,
    load_profile,
    load_profile_racing,
    root_profile,
)
from .race import RaceSettings, RaceStep, next_step, view_of
from .steps import steps_per_epoch
from .variants import expand_variants, where_in_entry, written_points

# States after which a run will not change without being asked to (retry or force).
SETTLED_STATES = (RunState.FINISHED, RunState.FAILED, RunState.DIVERGED, RunState.SKIPPED)


class UnresolvedBase(RuntimeError):
    """A ``best of`` base whose entry has not (completely) run yet."""

    def __init__(self, entry_id: str, message: str):
        self.entry_id = entry_id
        super().__init__(message)


@dataclass
class RunSpec:
    name: str
    variant: str
    seed: int
    config: Config
    run_dir: Path
    differences: dict[str, Any]
    entry_id: str = ""
    # This run's values of the keys that differ between the entry's variants (the table columns).
    varied: dict[str, Any] = field(default_factory=dict)
    # True when the base could not be resolved (dry run / show): the config and name are not final.
    provisional: bool = False
    # Set when the same config and seed already finished in another entry's folder: ``run_dir`` is
    # that directory (its records serve this entry too) and this is "<entry>/<run name>" of it.
    reused_from: Optional[str] = None


@dataclass
class Winner:
    entry_id: str
    variant: str
    metric: str
    mode: str
    score: float  # mean over the variant's finished seeds of each run's best value of ``metric``
    scores_by_variant: dict[str, float]
    run_dir: Path
    hyperparameters: dict[str, Any]
    # What set the winner apart from the runner-up ("by grader", "tie on grader 0.00: decided by ...").
    rule: str = ""
    # Variants that could not run on this machine (state skipped) -> why: the winner is among the others.
    skipped: dict[str, str] = field(default_factory=dict)
    # What the evidence says of the winner: decided, undecided (and against whom), or by rule only.
    decision: Optional[Decision] = None


@dataclass
class Base:
    profile: str
    values: dict[str, Any]
    best_of: Optional[str] = None
    winner: Optional[Winner] = None
    unresolved: Optional[str] = None
    # (entry id, variant name) when the base is a prescribed variant of an earlier entry.
    variant_of: Optional[tuple[str, str]] = None
    # When the prescribed variant could not run on this machine: what stands in for it and why, in words.
    fallback: Optional[str] = None

    def missing_note(self) -> Optional[str]:
        """The variants of the ``best of`` entry left out of its winner's choice (failed, skipped here), by kind
        only: the recorded errors name local paths, and this sentence reaches the write-up and the ladder."""
        decision = self.winner.decision if self.winner is not None else None
        if decision is None or not decision.missing:
            return None
        kinds = [f"{variant!r} {reason.split(': ', 1)[0]}" for variant, reason in decision.missing.items()]
        return f"the winner of {self.best_of} was chosen without {', '.join(kinds)}"

    def describe(self) -> str:
        if self.variant_of is not None:
            source, variant = self.variant_of
            state = f" (unresolved: {self.unresolved})" if self.unresolved else ""
            fallback = f" ({self.fallback})" if self.fallback else ""
            return f"prescribed variant {variant!r} of {source}{state}{fallback}; profile {self.profile}"
        if self.best_of is None:
            return f"profile {self.profile}"
        if self.winner is None:
            return f"best of {self.best_of} (unresolved: {self.unresolved}); profile {self.profile}"
        w = self.winner
        skipped = "".join(f"; variant {v!r} skipped here ({reason})" for v, reason in w.skipped.items())
        failed = "".join(f"; variant {v!r} {reason}" for v, reason in (w.decision.missing if w.decision else {}).items()
                         if v not in w.skipped)
        evidence = f"; {w.decision.describe()}" if w.decision is not None else ""
        return (
            f"best of {self.best_of}: variant {w.variant!r} ({w.metric} {w.mode} = {w.score:.3f}, {w.rule}{skipped}"
            f"{failed}{evidence}); profile {self.profile}"
        )


@dataclass
class Plan:
    entry: Entry
    base: Base
    runs: list[RunSpec]
    # How the entry races (docs/DESIGN.md §7.2), None when it trains its whole grid: then ``runs`` holds every
    # seed the race may use, and the race decides which of them train and how far.
    racing: Optional[RaceSettings] = None

    @property
    def resolved(self) -> bool:
        return self.base.unresolved is None


def plan(entry: Entry, profile: Optional[str] = None, runs_dir: str | Path = "runs") -> list[RunSpec]:
    """The runs of ``entry`` under ``profile`` (default: the entry's own), every config fully resolved.

    Raises UnresolvedBase when the ``best of`` entry has not run completely yet.
    """
    return make_plan(entry, profile, runs_dir).runs


def plan_profile(entry: Entry, profile: Optional[str], runs_dir: str | Path) -> Optional[str]:
    """The profile to plan ``entry`` with: the one given; else the one of its last `run`; else the one the
    nearest entry it builds on last ran with (after `run problem1.lr --profile quick`, problem1.batch_size
    plans, reports and suggests commands under quick too, not under its own profile, whose runs of the
    chain do not exist); else None (the entry's own, decided by :func:`make_plan`)."""
    if profile:
        return profile
    try:
        for current in base_chain(entry):
            remembered = remembered_profile(Path(runs_dir) / current.id)
            if remembered:
                return remembered
    except (EntryError, OSError):
        pass  # a base that cannot be read or that loops: planning says so
    return None


def make_plan(
    entry: Entry,
    profile: Optional[str] = None,
    runs_dir: str | Path = "runs",
    allow_unresolved: bool = False,
    _chain: tuple[str, ...] = (),
    _profile_name: Optional[str] = None,
    reuse: bool = True,
    racing: RacingChoice = None,
) -> Plan:
    """The plan of ``entry``. With ``reuse``, a run whose config and seed already finished in another
    entry's folder points at that directory instead of training again (see RunSpec.reused_from).
    ``racing``: see :func:`resolve_racing`."""
    runs_dir = Path(runs_dir).absolute()
    chain = _chain + (entry.id,)
    # Every entry of a 'best of' chain runs under the same profile: look it up once, at the top.
    profile_name = _profile_name or profile or root_profile(entry)
    profile_values = load_profile(entry.ablations_dir, profile_name)
    base = Base(profile=profile_name, values=dict(profile_values), best_of=entry.best_of, variant_of=entry.variant_of)
    if entry.base_entry is not None:
        try:
            if entry.best_of is not None:
                base.winner = resolve_winner(entry, profile, runs_dir, chain, profile_name)
                base.values.update(base.winner.hyperparameters)
            else:
                values, base.fallback = resolve_variant(entry, profile, runs_dir, chain, profile_name)
                base.values.update(values)
        except UnresolvedBase as exc:
            if not allow_unresolved:
                raise
            base.unresolved = str(exc)
    race = resolve_racing(entry, profile_name, runs_dir, racing)
    if race is not None and entry.run_count() == len(entry.seeds):
        race = None  # one variant: nothing to race against; its seeds train in full
    seeds = race.seed_order(entry.seeds) if race is not None else entry.seeds
    try:
        runs = _expand_runs(entry, base, runs_dir, reuse, seeds)
    except EntryError as exc:
        # The config values were checked one by one when the entry was read; what fails here is their
        # combination, which a provisional base (the profile without the winner) cannot decide.
        if base.unresolved is None:
            raise
        base.unresolved += f"; the runs cannot be planned before it is: {exc.problem}"
        runs = []
    return Plan(entry=entry, base=base, runs=runs, racing=race)


# None: as the entry's last `run` raced, else as the entry or its profile declares; False: no racing; True:
# racing with the remembered or declared settings, else the defaults; settings: these.
RacingChoice = Union[None, bool, RaceSettings]


def resolve_racing(entry: Entry, profile_name: str, runs_dir: Path,
                   choice: RacingChoice = None) -> Optional[RaceSettings]:
    """How ``entry`` races under ``profile_name`` (None: it does not), by ``choice`` (see RacingChoice)."""
    if choice is False:
        return None
    if isinstance(choice, RaceSettings):
        return choice
    known, remembered = remembered_racing(Path(runs_dir) / entry.id)
    declared = entry.racing or load_profile_racing(entry.ablations_dir, profile_name)
    if known and remembered is not None:
        try:
            declared = RaceSettings.model_validate(remembered)
        except ValueError:
            pass  # a damaged record: the declared settings stand
    if choice is True:
        return declared or RaceSettings()
    return declared if not known or remembered is not None else None


# ---------------------------------------------------------------------------------------------- variants


def finished_elsewhere(runs_dir: Path, entry_id: str) -> dict[tuple[int, str], Path]:
    """(seed, config hash) -> a finished run directory of another entry under ``runs_dir`` (the first in
    sorted order), from the directory names: a run's identity is its config hash and seed."""
    found: dict[tuple[int, str], Path] = {}
    if not runs_dir.is_dir():
        return found
    folders = [p for p in runs_dir.iterdir() if p.is_dir() and p.name != entry_id and not p.name.startswith(".")]
    for folder in sorted(folders):
        for child in sorted(folder.iterdir()):
            name = parse_run_name(child.name)
            if name is not None and (name.seed, name.config_hash) not in found and is_finished(child):
                found[(name.seed, name.config_hash)] = child
    return found


def _cut(text: str, limit: int = 200) -> str:
    """``text`` for a message, cut to ``limit`` characters (a grid value can be a megabyte long)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expand_runs(entry: Entry, base: Base, runs_dir: Path, reuse: bool, seeds: Sequence[int]) -> list[RunSpec]:
    try:
        base_config = make_config(base.values)
    except ConfigError as exc:
        raise EntryError(entry.path, "base", f"the base config is invalid: {exc}") from None
    base_hp = base_config.hyperparameters()
    elsewhere = finished_elsewhere(runs_dir, entry.id) if reuse and base.unresolved is None else {}
    runs = []
    seen: dict[str, str] = {}  # "s<seed>-<config hash>" -> the variant (grid point) that made it
    written = written_points(entry)
    for index, (variant, overrides) in enumerate(expand_variants(entry, base.values)):
        for seed in seeds:
            values = {
                **base.values,
                **entry.overrides,
                **overrides,
                "seed": seed,
                "wandb_group": entry.id,
                "wandb_job_type": variant,
                "wandb_tags": (entry.problem,),
            }
            where = where_in_entry(entry, variant)
            try:
                config = make_config(values, source=f"{entry.path}, variant {quoted(variant)}")
            except ConfigError as exc:
                raise EntryError(entry.path, where, str(exc)) from None
            config_hash = config.config_hash()
            name = run_name(variant, seed, config_hash)
            identity = f"s{seed}-{config_hash}"
            if identity in seen:
                raise EntryError(entry.path, where, f"{_cut(seen[identity])} and {_cut(written[index])} give the "
                                 f"same config (hash {config_hash}, seed {seed}) on this base: the run would be "
                                 "trained twice; remove one of them")
            seen[identity] = written[index]
            run_dir = runs_dir / entry.id / name
            reused_from = None
            other = elsewhere.get((seed, config_hash))
            if other is not None and not run_dir.exists():  # a run started here stays here
                run_dir, reused_from = other, f"{other.parent.name}/{other.name}"
            config = config.replace(log_dir=str(run_dir))
            hp = config.hyperparameters()
            differences = {k: v for k, v in hp.items() if v != base_hp.get(k)}
            runs.append(
                RunSpec(
                    name=name,
                    variant=variant,
                    seed=seed,
                    config=config,
                    run_dir=run_dir,
                    differences=differences,
                    entry_id=entry.id,
                    provisional=base.unresolved is not None,
                    reused_from=reused_from,
                )
            )
    varied_keys = varied_parameters(runs)
    for run in runs:
        hp = run.config.hyperparameters()
        run.varied = {k: hp[k] for k in varied_keys}
    _check_rank_metric(entry, runs)
    return runs


def _check_rank_metric(entry: Entry, runs: list[RunSpec]) -> None:
    """An entry whose every run trains one task cannot be ranked by the grader, which is not defined there."""
    if runs and entry.rank_by.metric == GRADER_KEY and all(r.config.tasks != BOTH_TASKS for r in runs):
        raise EntryError(entry.path, "rank_by.metric", "every run of this entry trains one task (config key "
                         "'tasks'), for which the grader is not defined: rank it by its task's metric "
                         "(val/iou, or val/si_logrmse with mode min)")


def varied_parameters(runs: list[RunSpec]) -> list[str]:
    """Config keys (seed aside) whose value differs between the runs, in schema order."""
    if len(runs) < 2:
        return []
    dumps = [run.config.hyperparameters() for run in runs]
    return [k for k in dumps[0] if k != "seed" and any(d[k] != dumps[0][k] for d in dumps[1:])]


# ---------------------------------------------------------------------------------------------- best of


def _run_hint(entry_id: str, profile: Optional[str], runs_dir: Path, ablations_dir: Path) -> str:
    command = command_line("run", [entry_id], profile=profile, runs_dir=runs_dir, ablations_dir=ablations_dir)
    return f"run `{command}` first"


def _metric_name(metric: str) -> str:
    return metric[len("val/"):] if metric.startswith("val/") else metric


def _plan_base_entry(entry: Entry, source_id: str, profile: Optional[str], runs_dir: Path, chain: tuple[str, ...],
                     profile_name: Optional[str]) -> tuple[Entry, Plan]:
    """The entry ``entry`` builds on (its winner or a variant of it) and that entry's resolved plan."""
    if source_id in chain:
        raise EntryError(entry.path, "base", f"bases form a cycle: {' -> '.join(chain + (source_id,))}")
    path = entry_path(entry.ablations_dir, source_id)
    if not path.exists():
        raise EntryError(entry.path, "base", f"unknown entry {source_id!r} (no {path.name} next to it)")
    source = load_entry(path)
    plan_ = make_plan(source, profile, runs_dir, allow_unresolved=False, _chain=chain, _profile_name=profile_name)
    return source, plan_


def resolve_winner(
    entry: Entry,
    profile: Optional[str],
    runs_dir: Path,
    chain: tuple[str, ...] = (),
    profile_name: Optional[str] = None,
    source_id: Optional[str] = None,
) -> Winner:
    """The winning config of ``source_id`` (default: ``entry.best_of``) under the same profile, read from
    its run records, with the decision that names it (:mod:`mtl.ablate.decision`): a raced entry's race
    decision, else the test over its finished runs' seeds ("by rule" with one seed a variant)."""
    source_id = source_id or entry.best_of
    assert source_id is not None
    source, source_plan = _plan_base_entry(entry, source_id, profile, runs_dir, chain, profile_name)
    states = {run.name: recorded_state(run.run_dir) for run in source_plan.runs}
    for run in source_plan.runs:
        if states[run.name] is RunState.UNKNOWN:  # a damaged status is named, not taken for "not finished"
            try:
                read_status(run.run_dir)
            except RecordError as exc:
                raise EntryError(entry.path, "base", f"'best of {source_id}' cannot be decided: {exc}") from None
    metric, mode = source.rank_by.metric, source.rank_by.mode
    try:  # damaged or disagreeing records must not silently change the winner
        if source_plan.racing is not None:
            decision, table, runs = _race_decision(source, source_plan, profile, runs_dir)
        else:
            decision, table, runs = _grid_decision(source, source_plan, states, profile, runs_dir)
    except RecordError as exc:
        raise EntryError(entry.path, "base", f"'best of {source_id}' cannot be decided: {exc}") from None
    if decision.winner is None:
        raise UnresolvedBase(
            source_id,
            f"entry {source_id} has no finished runs with a finite {metric}"
            + "".join(f"; variant {v!r}: {reason}" for v, reason in decision.out.items())
            + f"; {_run_hint(source_id, profile, runs_dir, entry.ablations_dir)} "
            "(add --retry-failed to retry failed runs)",
        )
    best_variant = decision.winner
    sign = 1.0 if mode == "max" else -1.0  # scores are ranks: a "min" metric is negated there
    means = {variant: sign * mean_rank(scores)[0] for variant, scores in table.items()}
    others = [v for v in table if v != best_variant]
    order = list(table)
    runner_up = max(others, key=lambda v: (mean_rank(table[v]), -order.index(v)), default=None)
    rule = (deciding_rule(mean_rank(table[best_variant]), mean_rank(table[runner_up]), _metric_name(metric))
            if runner_up is not None else "the only variant scored")
    best_seed = max(table[best_variant], key=lambda seed: table[best_variant][seed])
    best_run = runs[(best_variant, best_seed)]
    config_file = RunDirectory(best_run.run_dir).config_path
    try:
        recorded = read_config(best_run.run_dir) or {}
    except RecordError as exc:
        raise EntryError(entry.path, "base", f"'best of {source_id}' cannot be decided: {exc}") from None
    values = {k: v for k, v in recorded.items() if k not in RUN_INVARIANT_KEYS and k != "seed"}
    try:
        resolved = make_config(values, source=str(config_file))
    except ConfigError as exc:
        raise EntryError(entry.path, "base", f"the winner's config cannot be used: {exc}") from None
    hyperparameters = {k: getattr(resolved, k) for k in values}
    skipped = {v: reason[len(SKIPPED_HERE) + 2:] for v, reason in decision.missing.items()
               if reason.startswith(SKIPPED_HERE)}
    return Winner(
        entry_id=source_id,
        variant=best_variant,
        metric=metric,
        mode=mode,
        score=means[best_variant],
        scores_by_variant=means,
        rule=rule,
        skipped=skipped,
        run_dir=best_run.run_dir,
        hyperparameters=hyperparameters,
        decision=decision,
    )


SKIPPED_HERE = "skipped here"


def _grid_decision(source: Entry, plan_: Plan, states: dict[str, RunState], profile: Optional[str],
                   runs_dir: Path) -> tuple[Decision, dict[str, dict[int, Score]], dict[tuple[str, int], RunSpec]]:
    """The decision over an entry's finished runs at the full budget; a variant with a run that diverged,
    failed or was skipped here is out, named with why."""
    unsettled = [name for name, state in states.items() if state not in SETTLED_STATES]
    if unsettled:
        raise UnresolvedBase(
            source.id,
            f"entry {source.id} has {len(unsettled)} of {len(states)} runs not finished "
            f"({', '.join(unsettled)}); {_run_hint(source.id, profile, runs_dir, source.ablations_dir)}",
        )
    metric, mode = source.rank_by.metric, source.rank_by.mode
    table: dict[str, dict[int, Score]] = {}
    out: dict[str, str] = {}
    missing: dict[str, str] = {}
    runs: dict[tuple[str, int], RunSpec] = {}
    for run in plan_.runs:
        state = states[run.name]
        if state is RunState.SKIPPED:
            missing.setdefault(run.variant, f"{SKIPPED_HERE}: {error_of(run.run_dir) or 'no reason recorded'}")
        elif state is RunState.FAILED:
            error = error_of(run.run_dir) or "no error recorded"
            missing.setdefault(run.variant, f"failed (seed {run.seed}; --retry-failed retries it): {error}")
        elif state is RunState.DIVERGED:
            out.setdefault(run.variant, f"diverged (seed {run.seed})")
        elif state is RunState.FINISHED:
            score = run_score(read_record(run.run_dir).points, None, metric, mode)
            if score is not None:
                table.setdefault(run.variant, {})[run.seed] = score
                runs[(run.variant, run.seed)] = run
    order = list(dict.fromkeys(run.variant for run in plan_.runs))
    table = {v: scores for v, scores in table.items() if v not in out and v not in missing}
    confidence = RaceSettings().confidence
    return decide(table, order, confidence, _metric_name(metric), out=out, missing=missing), table, runs


def _race_decision(source: Entry, plan_: Plan, profile: Optional[str],
                   runs_dir: Path) -> tuple[Decision, dict[str, dict[int, Score]], dict[tuple[str, int], RunSpec]]:
    """The decision of a raced entry's race; UnresolvedBase while the race is not over."""
    assert plan_.racing is not None
    step = race_step(plan_)
    if step.decision is None:
        raise UnresolvedBase(
            source.id,
            f"the race of {source.id} is not over ({len(step.train)} run(s) to train next); "
            f"{_run_hint(source.id, profile, runs_dir, source.ablations_dir)}",
        )
    metric, mode = source.rank_by.metric, source.rank_by.mode
    num_epochs = plan_.runs[0].config.num_epochs
    runs = {(run.variant, run.seed): run for run in plan_.runs}
    table: dict[str, dict[int, Score]] = {}
    for variant, seeds in step.seeds.items():
        if variant in step.decision.out:
            continue
        for seed in seeds:
            score = run_score(read_record(runs[(variant, seed)].run_dir).points, num_epochs, metric, mode)
            if score is not None:
                table.setdefault(variant, {})[seed] = score
    return step.decision, table, runs


def race_step(plan_: Plan) -> RaceStep:
    """Where the race of a raced plan stands, from its runs' records (a pure function of them)."""
    assert plan_.racing is not None
    entry = plan_.entry
    views = {(run.variant, run.seed): view_of(run.run_dir) for run in plan_.runs}
    variants = list(dict.fromkeys(run.variant for run in plan_.runs))
    num_epochs = plan_.runs[0].config.num_epochs
    return next_step(variants, plan_.racing.seed_order(entry.seeds), num_epochs, views, plan_.racing,
                     entry.rank_by.metric, entry.rank_by.mode, _metric_name(entry.rank_by.metric),
                     steps_per_epoch(plan_.runs[0].config))


def resolve_variant(
    entry: Entry,
    profile: Optional[str],
    runs_dir: Path,
    chain: tuple[str, ...] = (),
    profile_name: Optional[str] = None,
) -> tuple[dict[str, Any], Optional[str]]:
    """The hyperparameters of the prescribed variant ``entry.variant_of`` of an earlier entry, whichever won
    there, and None; or, when that variant was recorded as skipped on this machine (it cannot run here,
    e.g. ImageNet weights absent offline), the winner among the variants that ran and a sentence saying
    so, which the plan, ``show``, ``status``, the write-up and the ladder print: a visible fallback, so
    that an offline chain still trains to its end."""
    assert entry.variant_of is not None
    source_id, variant = entry.variant_of
    _, source_plan = _plan_base_entry(entry, source_id, profile, runs_dir, chain, profile_name)
    runs = [run for run in source_plan.runs if run.variant == variant]
    if not runs:
        names = list(dict.fromkeys(run.variant for run in source_plan.runs))
        raise EntryError(entry.path, "base",
                         f"entry {source_id} has no variant {variant!r}; its variants: {', '.join(names)}")
    skipped = [run for run in runs if recorded_state(run.run_dir) is RunState.SKIPPED]
    if skipped:
        reason = error_of(skipped[0].run_dir) or "no reason recorded"
        winner = resolve_winner(entry, profile, runs_dir, chain, profile_name, source_id=source_id)
        # The kind of reason only: the whole one (in the skipped run's status) names local paths, which
        # would reach the write-up and be refused by export's leak check.
        fallback = (f"variant {variant!r} was skipped on this machine ({reason.split(':', 1)[0]}), so the winner "
                    f"among the variants that ran, {winner.variant!r} ({winner.rule}), stands in for it")
        return dict(winner.hyperparameters), fallback
    values = runs[0].config.model_dump()
    return {k: v for k, v in values.items() if k not in RUN_INVARIANT_KEYS and k != "seed"}, None


def entry_decision(plan_: Plan) -> Optional[Decision]:
    """What the entry's records decide now: a raced entry's race decision, else the test over its finished
    runs at the full budget; None while the race is not over or runs are not settled."""
    if not plan_.runs:
        return None
    try:
        if plan_.racing is not None:
            return race_step(plan_).decision
        states = {run.name: recorded_state(run.run_dir) for run in plan_.runs}
        return _grid_decision(plan_.entry, plan_, states, None, plan_.runs[0].run_dir.parent.parent)[0]
    except UnresolvedBase:
        return None
