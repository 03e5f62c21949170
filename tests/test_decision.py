"""The seed-paired test behind "decided": checked against scipy's own paired t-test where the two must
agree, and against a hand-computed additive fit where the variance is pooled over more variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mtl.ablate.decision import (
    BY_RULE,
    DECIDED,
    UNDECIDED,
    compare,
    decide,
    leader,
    pooled_residual_variance,
    run_score,
)


def table(**variants: list[float]) -> dict[str, dict[int, tuple[float, float]]]:
    """Scores by seed (grader only; the tie-break mirrors it so it never decides here)."""
    return {name: {seed: (value, value) for seed, value in enumerate(values)} for name, values in variants.items()}


def test_with_two_variants_the_test_is_scipys_paired_t_test():
    scores = table(a=[5.0, 6.5, 4.0, 7.0], b=[4.1, 6.0, 2.5, 6.2])
    (comparison,) = compare(scores, "a", confidence=0.9)
    reference = stats.ttest_rel([5.0, 6.5, 4.0, 7.0], [4.1, 6.0, 2.5, 6.2], alternative="greater")
    assert comparison.df == 3
    assert comparison.t == pytest.approx(reference.statistic)
    assert comparison.p == pytest.approx(reference.pvalue)
    assert comparison.separated == (reference.pvalue < 0.1)


def test_the_variance_is_pooled_over_every_variant_by_an_additive_fit():
    values = {"a": [5.0, 6.5, 4.0], "b": [4.1, 6.0, 2.5], "c": [1.0, 3.5, 0.5]}
    # The additive fit of a complete table by hand: grand mean + row effect + column effect.
    grid = np.array(list(values.values()))
    fitted = grid.mean(1, keepdims=True) + grid.mean(0, keepdims=True) - grid.mean()
    expected = float(((grid - fitted) ** 2).sum()) / ((3 - 1) * (3 - 1))
    variance, df = pooled_residual_variance(table(**values), 0)
    assert df == 4 and variance == pytest.approx(expected)
    comparisons = {c.variant: c for c in compare(table(**values), "a", confidence=0.95)}
    difference = np.mean(np.array(values["a"]) - np.array(values["c"]))
    assert comparisons["c"].t == pytest.approx(difference / math.sqrt(2 * expected / 3))
    assert comparisons["c"].p == pytest.approx(stats.t.sf(comparisons["c"].t, 4))


def test_unbalanced_seeds_fit_by_least_squares():
    scores = table(a=[5.0, 6.0, 4.0, 7.0, 5.5], b=[4.0, 5.5, 3.0], c=[2.0, 2.5])
    variance, df = pooled_residual_variance(scores, 0)
    assert df == 10 - 3 - 5 + 1
    assert variance > 0


def test_a_metric_tied_at_every_seed_is_compared_by_the_tie_break():
    scores = {"a": {0: (0.0, -30.0), 1: (0.0, -32.0), 2: (0.0, -29.0)},
              "b": {0: (0.0, -40.0), 1: (0.0, -41.5), 2: (0.0, -39.0)}}
    (comparison,) = compare(scores, "a", confidence=0.9)
    assert comparison.key == "IoU - SI-logRMSE" and comparison.difference == pytest.approx(9.8333, abs=1e-3)
    assert comparison.separated


def test_leader_by_mean_rank_then_listed_order():
    scores = {"a": {0: (1.0, 5.0), 1: (3.0, 5.0)}, "b": {0: (2.0, 0.0), 1: (2.0, 9.0)}}
    assert leader(scores, ["a", "b"]) == "a"  # the same mean grader, 2.0: the mean tie-break, 5.0 > 4.5
    scores["b"][1] = (2.0, 11.0)
    assert leader(scores, ["a", "b"]) == "b"  # now 5.5 > 5.0
    assert leader({"a": {0: (1.0, 0.0)}, "b": {0: (1.0, 0.0)}}, ["b", "a"]) == "b"


def test_decisions_say_decided_undecided_or_by_rule():
    clear = decide(table(a=[9.0, 9.5, 8.7], b=[5.0, 5.2, 4.9], c=[1.0, 1.4, 0.8]), ["a", "b", "c"], 0.9)
    assert clear.kind == DECIDED and clear.winner == "a" and clear.tied == ()
    assert "decided: a" in clear.describe() and "seed-paired t-test" in clear.describe()
    close = decide(table(a=[5.0, 6.5, 4.0], b=[5.1, 6.0, 4.2]), ["a", "b"], 0.9)
    assert close.kind == UNDECIDED and close.tied == ("b",)
    assert "not separated" in close.describe()
    single = decide(table(a=[5.0], b=[2.0]), ["a", "b"], 0.9)
    assert single.kind == BY_RULE and single.winner == "a"
    assert single.describe() == "by rule, not decided: a (one seed a variant)"


def test_run_score_is_the_best_point_up_to_an_epoch():
    points = [{"step": 10, "epoch": 1, "val/grader": 0.0, "val/iou": 10.0, "val/si_logrmse": 60.0},
              {"step": 20, "epoch": 2, "val/grader": 3.0, "val/iou": 12.0, "val/si_logrmse": 47.0},
              {"step": 30, "epoch": 3, "val/grader": 2.0, "val/iou": 14.0, "val/si_logrmse": 48.0}]
    assert run_score(points, 1) == (0.0, -50.0)
    assert run_score(points) == (3.0, -35.0)
    assert run_score([{"step": 10, "epoch": 1, "val/grader": math.nan}]) is None
