"""Racing replayed over fully recorded grids, beside Optuna's own pruners driven with the same recorded values.

Each grid of ``bench/racing/ablations`` (an entry's variants, five seeds each, the ``race`` profile) was
trained in full once; its traces (config, status, metric lines) are kept in ``bench/racing/records``. The
racing policy (:mod:`mtl.ablate.race`) is a pure function of traces, so it is replayed here without
training: every "training" reveals a run's recorded points up to the epoch asked for and costs the
optimizer steps in between.

Per grid it prints the full grid's own decision (every seed, full budget), then, over every order of the
seeds (which seeds the race gets first), how often the race decides the full grid's winner, decides
another (wrong), or stays undecided, and its optimizer steps against the full grid's. Beside it, the
same recorded values drive Optuna's SuccessiveHalvingPruner and HyperbandPruner (a trial per variant and
seed, the best grader so far reported at each epoch) and WilcoxonPruner (a trial per variant, each seed's
final best grader reported as one instance), through ``trial.report``/``trial.should_prune``. A null
replay shuffles the variant labels within each seed -- no variant is better than another there -- and
counts how often the race still says "decided": its false-decision rate.

    python bench/race_replay.py              # replay the committed records (a minute)
    python bench/race_replay.py --train      # train the grids first (hours on 2 cores), keep their traces, replay
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtl.ablate.decision import Decision, decide, run_score  # noqa: E402
from mtl.ablate.entry import load_entries  # noqa: E402
from mtl.ablate.planner import make_plan  # noqa: E402
from mtl.ablate.race import RaceSettings, RecordedRun, replay  # noqa: E402
from mtl.run.layout import RunDirectory, parse_run_name  # noqa: E402
from mtl.run.model import RunState  # noqa: E402
from mtl.run.records import read_record  # noqa: E402

ABLATIONS = REPO / "bench" / "racing" / "ablations"
RECORDS = REPO / "bench" / "racing" / "records"
PROFILE = "race"
KEPT_FILES = ("config.yaml", "status.json", "metrics.jsonl")


@dataclass
class Grid:
    entry_id: str
    variants: list[str]
    seeds: list[int]
    num_epochs: int
    runs: dict[tuple[str, int], RecordedRun]

    @property
    def full_steps(self) -> int:
        return sum(run.steps_until(self.num_epochs) for run in self.runs.values())


def recorded_run(run_dir: Path) -> RecordedRun:
    record = read_record(run_dir)
    steps = {int(p["epoch"]): int(p["step"]) for p in record.points}
    diverged = record.status.diverged_step if record.status and record.state is RunState.DIVERGED else None
    return RecordedRun(points=tuple(record.points), steps_at_epoch=steps, diverged_step=diverged)


def recorded_dir(run_dir: Path, records: Path) -> Path:
    """Where the records hold a planned run: its own folder, or that of the grid it was trained in first (a
    run of the same config and seed is reused across entries, and only its first copy is kept)."""
    if run_dir.is_dir():
        return run_dir
    name = parse_run_name(run_dir.name)
    for other in sorted(records.glob(f"*/*-s{name.seed}-{name.config_hash}")) if name else []:
        return other
    raise FileNotFoundError(f"{run_dir.name} is not in the records ({records})")


def load_grids(records: Path, only: list[str] | None = None) -> list[Grid]:
    grids = []
    for entry in load_entries(ABLATIONS).values():
        if only and entry.id not in only:
            continue
        plan = make_plan(entry, PROFILE, records)
        runs = {(spec.variant, spec.seed): recorded_run(recorded_dir(spec.run_dir, records)) for spec in plan.runs}
        variants = list(dict.fromkeys(spec.variant for spec in plan.runs))
        grids.append(Grid(entry.id, variants, list(entry.seeds), plan.runs[0].config.num_epochs, runs))
    return grids


def full_decision(grid: Grid, confidence: float) -> Decision:
    table, out = {}, {}
    for variant in grid.variants:
        scores = {}
        for seed in grid.seeds:
            score = run_score(grid.runs[(variant, seed)].points)
            run = grid.runs[(variant, seed)]
            if run.diverged_step is not None or score is None:
                out[variant] = f"diverged (seed {seed})" if run.diverged_step is not None else "no score"
                break
            scores[seed] = score
        if variant not in out:
            table[variant] = scores
    return decide(table, grid.variants, confidence, out=out)


# ---------------------------------------------------------------------------------------- Optuna
def _best_so_far(run: RecordedRun, epoch: int) -> float:
    """The best grader up to ``epoch`` (what a user reports to a pruner), -inf for a run that diverged."""
    score = run_score(run.points, epoch)
    return score[0] if score is not None and not (run.diverged_step and epoch > max(run.steps_at_epoch)) \
        else -math.inf


def optuna_rung_pruner(grid: Grid, order: list[int], make_pruner, n_seeds: int) -> tuple[str | None, int]:
    """A study over (variant, seed) trials for the first ``n_seeds`` seeds of ``order``, seed-major; the best
    grader so far reported every epoch; the winner is the variant with the best mean final value over its
    completed trials. Returns (winner, optimizer steps)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    finals: dict[str, list[float]] = {}
    steps = 0
    for seed in order[:n_seeds]:
        for variant in grid.variants:
            run = grid.runs[(variant, seed)]
            trial = study.ask()
            reached = 0
            pruned = False
            for epoch in range(1, grid.num_epochs + 1):
                reached = epoch
                value = _best_so_far(run, epoch)
                if run.diverged_step is not None and epoch > max(run.steps_at_epoch, default=0):
                    break
                trial.report(value, epoch)
                if trial.should_prune():
                    pruned = True
                    break
            steps += run.steps_until(reached)
            if pruned or not math.isfinite(_best_so_far(run, reached)) or reached < grid.num_epochs:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            value = _best_so_far(run, grid.num_epochs)
            study.tell(trial, value)
            finals.setdefault(variant, []).append(value)
    winner = max(finals, key=lambda v: mean(finals[v])) if finals else None
    return winner, steps


def optuna_wilcoxon(grid: Grid, order: list[int], p_threshold: float = 0.1) -> tuple[str | None, int]:
    """A study with a trial per variant; each seed's final best grader is one instance (``report(value,
    step=seed)``), evaluated in ``order`` until WilcoxonPruner prunes the trial. Winner: the best mean."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.WilcoxonPruner(p_threshold=p_threshold),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    means: dict[str, float] = {}
    steps = 0
    for variant in grid.variants:
        trial = study.ask()
        values = []
        for seed in order:
            run = grid.runs[(variant, seed)]
            steps += run.steps_until(grid.num_epochs)
            value = _best_so_far(run, grid.num_epochs)
            values.append(value)
            trial.report(value, seed)
            if trial.should_prune():
                break
        if len(values) == len(order):
            study.tell(trial, mean(values))
            means[variant] = mean(values)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    winner = max(means, key=lambda v: means[v]) if means else None
    return winner, steps


# ---------------------------------------------------------------------------------------- replay
def seed_orders(seeds: list[int], limit: int) -> list[list[int]]:
    orders = [list(p) for p in itertools.permutations(seeds)]
    if len(orders) > limit:
        orders = random.Random(0).sample(orders, limit)
    return orders


def same_config_grid(grid: Grid, variant: str, copies: int = 3) -> Grid:
    """A null grid from one variant's own runs: ``copies`` pseudo-variants of the same config, the k-th using
    at seed slot s the run of seed (s + k) mod n, so that no two use the same run at a slot. Every
    pseudo-variant is the same config: a race that calls one of them the winner is wrong."""
    seeds = grid.seeds
    names = [f"{variant}#{k}" for k in range(copies)]
    runs = {(name, seed): grid.runs[(variant, seeds[(i + k) % len(seeds)])]
            for k, name in enumerate(names) for i, seed in enumerate(seeds)}
    return Grid(f"{grid.entry_id}/{variant} x{copies}", names, seeds, grid.num_epochs, runs)


def shuffled_labels(grid: Grid, rng: random.Random) -> Grid:
    """The same runs with the variant labels shuffled within each seed: the null grid, no variant better."""
    runs = {}
    for seed in grid.seeds:
        labels = list(grid.variants)
        rng.shuffle(labels)
        for variant, label in zip(grid.variants, labels):
            runs[(label, seed)] = grid.runs[(variant, seed)]
    return Grid(grid.entry_id, grid.variants, grid.seeds, grid.num_epochs, runs)


@dataclass
class Tally:
    """One method over the replays of one grid: decisions named (a winner claimed), right ones (the full
    grid's decided winner), and optimizer steps."""

    named: int = 0
    right: int = 0
    replays: int = 0
    steps: float = 0.0

    def add(self, winner: str | None, truth: str | None, steps: int) -> None:
        self.named += winner is not None
        self.right += truth is not None and winner == truth
        self.replays += 1
        self.steps += steps


def race_tally(grid: Grid, orders: list[list[int]], settings: RaceSettings, truth: str | None) -> Tally:
    tally = Tally()
    for order in orders:
        result = replay(grid.variants, order, grid.num_epochs, grid.runs, settings)
        decision = result.step.decision
        tally.add(decision.winner if decision is not None and decision.decided else None, truth, result.steps)
    return tally


def null_rates(grid: Grid, orders: list[list[int]], settings: RaceSettings, nulls: int) -> tuple[int, int, int]:
    """(same-config null decisions, their replays, label-shuffle null decisions out of ``nulls``)."""
    false = same = 0
    for variant in grid.variants:
        if any(grid.runs[(variant, s)].diverged_step is not None for s in grid.seeds):
            continue
        for copies in (2, 3):
            null = same_config_grid(grid, variant, copies)
            for order in orders:
                result = replay(null.variants, order, null.num_epochs, null.runs, settings)
                false += bool(result.step.decision and result.step.decision.decided)
                same += 1
    rng = random.Random(1)
    shuffled = 0
    for _ in range(nulls):
        null = shuffled_labels(grid, rng)
        result = replay(null.variants, grid.seeds, null.num_epochs, null.runs, settings)
        shuffled += bool(result.step.decision and result.step.decision.decided)
    return false, same, shuffled


def pruner_tallies(grid: Grid, orders: list[list[int]], truth: str | None) -> dict[str, Tally]:
    import optuna

    pruners = {"SuccessiveHalving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2,
                                                                                    reduction_factor=2),
               "Hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=2, max_resource=grid.num_epochs,
                                                                    reduction_factor=2)}
    tallies: dict[str, Tally] = {}
    for name, make in pruners.items():
        for n_seeds in range(1, len(grid.seeds) + 1):
            tally = tallies.setdefault(f"Optuna {name}, {n_seeds} seed{'s' if n_seeds > 1 else ''}", Tally())
            for order in orders:
                winner, steps = optuna_rung_pruner(grid, order, make, n_seeds)
                tally.add(winner, truth, steps)
    tally = tallies.setdefault("Optuna WilcoxonPruner (seeds as instances)", Tally())
    for order in orders:
        winner, steps = optuna_wilcoxon(grid, order)
        tally.add(winner, truth, steps)
    return tallies


def report_grid(grid: Grid, settings: RaceSettings, orders_limit: int, nulls: int) -> dict[str, Tally]:
    full = full_decision(grid, settings.confidence)
    truth = full.winner if full.decided else None
    orders = seed_orders(grid.seeds, orders_limit)
    print(f"\n{grid.entry_id}: {len(grid.variants)} variants x {len(grid.seeds)} seeds, {grid.num_epochs} epochs; "
          f"full grid {grid.full_steps} optimizer steps")
    print(f"  full grid: {full.describe()}")
    tallies = {"race": race_tally(grid, orders, settings, truth), **pruner_tallies(grid, orders, truth)}
    for name, tally in tallies.items():
        named = f"right {tally.right}/{tally.replays}" if truth else f"named a winner {tally.named}/{tally.replays}"
        print(f"  {name}: {named}; mean steps {tally.steps / tally.replays:.0f} = "
              f"{100 * tally.steps / tally.replays / grid.full_steps:.1f}% of the full grid")
    false, same, shuffled = null_rates(grid, orders, settings, nulls)
    print(f"  race, same-config null (2 or 3 copies of one variant, seeds re-paired): decided {false}/{same}")
    print(f"  race, label-shuffle null (the variants' runs mixed within each seed): decided {shuffled}/{nulls}")
    for tally in tallies.values():
        tally.steps /= grid.full_steps * tally.replays  # from here on: the share of the full grid
    return {"decided": truth is not None, **tallies}


def summary(results: list[dict], names: list[str]) -> None:
    """One row per method: over the grids the full grid decides, right decisions and the mean share of the
    full grid's steps; over the others, how often it named a winner the full grid does not support."""
    decided = [r for r in results if r["decided"]]
    undecided = [r for r in results if not r["decided"]]
    print(f"\nsummary ({len(decided)} grids decided in full, {len(undecided)} not)")
    print("| method | right where the full grid decides | steps there (share of the full grid) | "
          "a winner named where it does not |")
    print("|---|---:|---:|---:|")
    for name in names:
        right = sum(r[name].right for r in decided)
        replays = sum(r[name].replays for r in decided)
        share = mean(r[name].steps for r in decided) if decided else math.nan
        named = sum(r[name].named for r in undecided)
        named_of = sum(r[name].replays for r in undecided)
        print(f"| {name} | {right}/{replays} | {100 * share:.1f}% | {named}/{named_of} |")


# ---------------------------------------------------------------------------------------- recording
def train_grids(runs_dir: Path) -> None:
    """Train every grid in full with the race profile (one run at a time), then keep their traces."""
    entries = sorted(load_entries(ABLATIONS))
    command = [sys.executable, "-m", "mtl.suite", "run", *entries, "--ablations-dir", str(ABLATIONS),
               "--runs-dir", str(runs_dir), "--profile", PROFILE, "--jobs-per-device", "1", "--retry-failed"]
    subprocess.run(command, cwd=REPO, check=True)
    collect(runs_dir)


def collect(runs_dir: Path) -> None:
    """Copy the kept files of each finished or diverged run of every grid from ``runs_dir`` into RECORDS."""
    for entry in load_entries(ABLATIONS).values():
        for spec in make_plan(entry, PROFILE, runs_dir).runs:
            source = RunDirectory(spec.run_dir)
            if read_record(source.path).state not in (RunState.FINISHED, RunState.DIVERGED):
                continue
            target = RECORDS / spec.run_dir.parent.name / spec.run_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for name, path in zip(KEPT_FILES, (source.config_path, source.status_path, source.metrics)):
                shutil.copyfile(path, target / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, metavar="RUNS_DIR", help="train the grids into RUNS_DIR first")
    parser.add_argument("--collect", type=Path, metavar="RUNS_DIR", help="only copy the traces of RUNS_DIR's grids")
    parser.add_argument("--orders", type=int, default=120, help="seed orders replayed per grid (all 120 of 5 seeds)")
    parser.add_argument("--nulls", type=int, default=100, help="label-shuffle null replays per grid")
    parser.add_argument("--only", nargs="*", metavar="ENTRY", help="replay these grids only")
    args = parser.parse_args()
    if importlib.util.find_spec("optuna") is None:
        parser.error("Optuna is needed to replay its pruners beside the race: "
                     'pip install -c constraints.txt -e ".[bench]"')
    if args.train:
        train_grids(args.train)
    if args.collect:
        collect(args.collect)
        return 0
    settings = RaceSettings()
    print(f"racing settings: {settings}")
    results = [report_grid(grid, settings, args.orders, args.nulls) for grid in load_grids(RECORDS, args.only)]
    summary(results, [name for name in results[0] if name != "decided"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
