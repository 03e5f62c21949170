"""The racing policy over hand-made traces (nothing trains): rungs, pruning, seeds added where they can change
the answer, diverged and skipped variants, and the same decision whenever the records are read again."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mtl.ablate.decision import BY_RULE, DECIDED, UNDECIDED
from mtl.ablate.race import RaceSettings, RecordedRun, RunView, next_step, replay
from mtl.run.model import RunState

STEPS_PER_EPOCH = 10
REPO = Path(__file__).resolve().parents[1]


def trace(final: float, epochs: int = 8, diverge_at: int | None = None) -> RecordedRun:
    """A run whose grader climbs linearly to ``final`` (IoU and SI-logRMSE follow it); with ``diverge_at``
    its trace ends before that epoch."""
    points = []
    last = epochs if diverge_at is None else diverge_at - 1
    for epoch in range(1, last + 1):
        grader = final * epoch / epochs
        points.append({"step": epoch * STEPS_PER_EPOCH, "epoch": epoch, "val/grader": grader,
                       "val/iou": 10.0 + grader, "val/si_logrmse": 50.0 - grader})
    steps = {p["epoch"]: p["step"] for p in points}
    diverged = (diverge_at - 1) * STEPS_PER_EPOCH + 3 if diverge_at else None
    return RecordedRun(tuple(points), steps, diverged_step=diverged)


def grid(means: dict[str, float], noise: float, seeds: int = 5, seed: int = 0, **special) -> dict:
    rng = random.Random(seed)
    seed_effect = [rng.gauss(0, noise) for _ in range(seeds)]
    runs = {}
    for variant, mean in means.items():
        for s in range(seeds):
            runs[(variant, s)] = special.get(variant) or trace(mean + seed_effect[s] + rng.gauss(0, noise))
    return runs


def test_rungs_and_seed_order():
    settings = RaceSettings()
    assert settings.rung_epochs(8) == [2, 4, 8] and settings.rung_epochs(4) == [1, 2, 4]
    assert settings.rung_epochs(1) == [1]  # no room for a rung: the whole budget at once
    assert settings.seed_order([0]) == [0, 1, 2, 3, 4] and settings.seed_order([7, 3]) == [7, 3, 0, 1, 2]
    with pytest.raises(ValueError, match="max_seeds"):
        RaceSettings(min_seeds=4, max_seeds=3)
    with pytest.raises(ValueError, match="fraction of the budget"):
        RaceSettings(rungs=(0.5, 1.0))


def test_a_clear_winner_prunes_the_rest_early_and_is_decided_on_a_fraction_of_the_grid():
    runs = grid({"weak": 2.0, "strong": 12.0, "middle": 6.0}, noise=0.3)
    result = replay(["weak", "strong", "middle"], list(range(5)), 8, runs, RaceSettings())
    decision = result.step.decision
    assert decision.kind == DECIDED and decision.winner == "strong"
    assert set(result.step.pruned) == {"weak", "middle"}  # both left behind at a rung
    assert all("at epoch 2/8" in why for why in result.step.pruned.values())
    full = sum(run.steps_until(8) for run in runs.values())
    # Nine runs (three seeds a variant) to the first rung, the winner's three on to the end: 9 x 20 + 3 x 60
    # of the full grid's 15 x 80 steps.
    assert result.steps == 360 and result.steps / full == pytest.approx(0.3)
    assert result.trained == {**{(v, s): 2 for v in ("weak", "middle") for s in range(3)},
                              **{("strong", s): 8 for s in range(3)}}


def test_a_tie_gets_more_seeds_up_to_the_cap_then_stays_undecided():
    runs = grid({"a": 6.0, "b": 6.0}, noise=1.0, seed=3)
    settings = RaceSettings(max_seeds=4)
    result = replay(["a", "b"], list(range(5)), 8, runs, settings)
    decision = result.step.decision
    assert decision.kind == UNDECIDED and decision.tied in (("a",), ("b",))
    assert max(len(seeds) for seeds in result.step.seeds.values()) <= 4
    assert "not separated from it at 95%" in decision.describe()


def test_a_diverged_variant_is_out_and_never_the_winner():
    runs = grid({"diverges": 50.0, "steady": 5.0, "slow": 1.0}, noise=0.2, diverges=None)
    for s in range(5):
        runs[("diverges", s)] = trace(50.0, diverge_at=2 if s == 1 else None)  # seed 1 diverges in epoch 2
    result = replay(["diverges", "steady", "slow"], list(range(5)), 8, runs, RaceSettings())
    assert result.step.decision.winner == "steady"
    assert result.step.pruned["diverges"] == "diverged (seed 1) before epoch 2"
    assert "out earlier: diverges" in result.step.decision.describe()


def test_a_skipped_variant_is_named_never_compared():
    views = {(v, s): RunView(tuple(trace(m + s).points), RunState.FINISHED)
             for v, m in (("a", 8.0), ("b", 3.0)) for s in range(2)}
    views.update({("offline", s): RunView((), RunState.SKIPPED) for s in range(2)})
    step = next_step(["offline", "a", "b"], [0, 1, 2], 8, views, RaceSettings(rungs=(), min_seeds=2, max_seeds=2))
    assert step.decision is not None and step.decision.winner == "a"
    assert step.decision.missing == {"offline": "skipped here (seed 0)"}
    assert "offline did not" in step.decision.describe()


def test_the_records_alone_decide_what_comes_next_whenever_they_are_read():
    """A race stopped after any round and read again (a killed `mtl-ablate`) asks for exactly what the
    uninterrupted race asked for next, and ends at the same decision: next_step is a pure function."""
    runs = grid({"a": 6.0, "b": 5.0, "c": 2.0}, noise=1.0, seed=7)
    settings = RaceSettings()
    trained: dict[tuple[str, int], int] = {}
    asked = []
    while True:
        views = {key: runs[key].view(epoch) for key, epoch in trained.items()}
        step = next_step(["a", "b", "c"], list(range(5)), 8, views, settings)
        again = next_step(["a", "b", "c"], list(range(5)), 8, dict(views), settings)
        assert [(t.variant, t.seed, t.epoch) for t in step.train] == [(t.variant, t.seed, t.epoch) for t in again.train]
        if step.over:
            break
        asked.append(step.train)
        for t in step.train:
            trained[(t.variant, t.seed)] = t.epoch
    final = replay(["a", "b", "c"], list(range(5)), 8, runs, settings)
    assert final.step.decision == step.decision and final.trained == trained


def test_one_seed_a_variant_decides_nothing():
    views = {(v, 0): RunView(tuple(trace(m).points), RunState.FINISHED) for v, m in (("a", 8.0), ("b", 3.0))}
    from mtl.ablate.decision import decide, run_score

    decision = decide({v: {0: run_score(views[(v, 0)].points)} for v in ("a", "b")}, ["a", "b"], 0.95)
    assert decision.kind == BY_RULE and decision.describe() == "by rule, not decided: a (one seed a variant)"


def test_the_recorded_grids_are_decided_as_in_full_on_a_fraction_of_their_steps():
    """The committed records of bench/racing (the race profile, five seeds a variant) of the two grids whose
    full grids are decided (race.lr: lr 0.01; race.optimizer: Adam 1e-3): the race reaches the same winner
    for every order of the seeds, on at most 40% of the two full grids' optimizer steps on average."""
    import itertools
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    import race_replay

    settings = RaceSettings()
    spent = full_steps = 0.0
    for grid in race_replay.load_grids(race_replay.RECORDS, ["race.lr", "race.optimizer"]):
        full = race_replay.full_decision(grid, settings.confidence)
        assert full.decided and full.winner in ("optimizer_lr=0.01", "adam-1e-3")
        orders = list(itertools.permutations(grid.seeds))
        for order in orders:
            result = replay(grid.variants, list(order), grid.num_epochs, grid.runs, settings)
            assert result.step.decision.decided and result.step.decision.winner == full.winner, order
            spent += result.steps / len(orders)
        full_steps += grid.full_steps
    assert spent <= 0.4 * full_steps


def test_a_budget_ends_the_race_undecided_with_the_leader_where_it_stood():
    """budget_seeds=1.0: the race may spend what training every variant once in full costs; with three seeds
    a variant it cannot go past the first rung, and says so."""
    runs = grid({"a": 6.5, "b": 6.0, "c": 5.5}, noise=1.0, seed=5)
    settings = RaceSettings(budget_seeds=1.0)
    result = replay(["a", "b", "c"], list(range(5)), 8, runs, settings)
    decision = result.step.decision
    budget = 3 * 8 * STEPS_PER_EPOCH
    assert result.steps <= budget
    assert decision.kind == UNDECIDED and decision.winner in ("a", "b", "c")
    assert decision.describe().endswith(f"the budget of {budget} optimizer steps ended the race at epoch 2/8")
    assert RaceSettings(budget_seeds=0.1).budget_steps(3, 8, STEPS_PER_EPOCH) == 24
    tiny = replay(["a", "b", "c"], list(range(5)), 8, runs, RaceSettings(budget_seeds=0.1))
    assert tiny.steps == 0 and tiny.step.decision.winner is None
    assert "does not cover the first rung" in tiny.step.decision.describe()


def test_an_entry_of_one_variant_is_not_raced(ablations, tmp_path):
    from mtl.ablate.entry import load_entries
    from mtl.ablate.planner import make_plan
    from support import write_entry

    write_entry(ablations, "problem4.final", base="quick", seeds=[0, 1, 2], racing={})
    write_entry(ablations, "problem1.pair", base="quick", grid={"optimizer_lr": [0.01, 0.1]}, racing={})
    entries = load_entries(ablations)
    single = make_plan(entries["problem4.final"], None, tmp_path / "runs")
    assert single.racing is None and [run.seed for run in single.runs] == [0, 1, 2]
    pair = make_plan(entries["problem1.pair"], None, tmp_path / "runs")
    assert pair.racing is not None and sorted({run.seed for run in pair.runs}) == [0, 1, 2, 3, 4]
