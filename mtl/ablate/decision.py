"""Deciding an entry from its runs: the leader by the one rule for "best", and the seed-paired test that
says whether the evidence separates it from each other variant (docs/DESIGN.md §7.1).

A run's score at a budget is its best validation point up to that epoch, as the rule ranks it: the metric
the entry ranks by (the grader by default), then IoU - SI-logRMSE. The leader is the variant with the best
mean rank over its seeds (:func:`leader`), as ``best of`` has always chosen.

The test (:func:`compare`) is a one-sided paired t-test with a pooled variance. Runs with the same seed
share their data order, so seed-paired differences cancel what the seed does to every variant alike. The
model: score[variant, seed] = variant effect + seed effect + noise, the noise independent and normal with
one variance for every variant. The variance is estimated once per entry from the residuals of that
additive fit over every variant and seed that has a score (least squares on unbalanced data), which gives
(variants - 1) x (seeds - 1) degrees of freedom on a complete table instead of the seeds - 1 of a single
pair: that is what lets two or three seeds decide a clear difference. A comparison uses the primary metric;
where leader and challenger are tied on it at every shared seed (both graders 0, common early in
training), it uses the tie-break, IoU - SI-logRMSE, with that key's own pooled variance, as the rule does.

"Decided" means the leader is separated from every other variant at the entry's confidence (an
intersection of one-sided tests, so no correction for the number of variants is needed for that claim).
The assumptions (normal, equal variances, additive seed effect) are not taken on trust: the replay
benchmark measures how often decisions are wrong on recorded grids (BENCHMARKS.md, "Racing").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from mtl.run.best import point_rank
from mtl.run.model import GRADER_KEY
from mtl.run.trace import Line

# (primary metric, IoU - SI-logRMSE) of a run's best point; both finite.
Score = tuple[float, float]
TIE_BREAK_NAME = "IoU - SI-logRMSE"


def run_score(points: Sequence[Line], until_epoch: Optional[int] = None, metric: str = GRADER_KEY,
              mode: str = "max") -> Optional[Score]:
    """The best point's rank (metric, tie-break) among the validation lines up to ``until_epoch``; None when
    no point there has a finite metric (never validated, or diverged from the start). Higher is better
    (a "min" metric is negated, as :func:`mtl.run.best.point_rank` does)."""
    best: Optional[tuple[float, float, float]] = None
    for point in points:
        if until_epoch is not None and point.get("epoch", 0) > until_epoch:
            continue
        rank = point_rank(point, metric, mode)
        if math.isfinite(rank[0]) and (best is None or rank > best):
            best = rank
    return (best[0], best[1]) if best is not None else None


def mean_rank(scores: Mapping[int, Score]) -> tuple[float, float]:
    values = list(scores.values())
    return (sum(s[0] for s in values) / len(values), sum(s[1] for s in values) / len(values))


def leader(table: Mapping[str, Mapping[int, Score]], order: Sequence[str]) -> Optional[str]:
    """The variant with the best mean rank over its seeds (metric, then tie-break), the earlier listed on a
    tie; None when no variant has a score."""
    scored = [v for v in order if table.get(v)]
    if not scored:
        return None
    return max(scored, key=lambda v: (mean_rank(table[v]), -order.index(v)))


def pooled_residual_variance(table: Mapping[str, Mapping[int, Score]], key: int) -> tuple[float, int]:
    """(variance, degrees of freedom) of the residuals of score = variant + seed + noise, fitted by least
    squares over every (variant, seed) with a score; (nan, 0) when the table leaves no degree of freedom."""
    cells = [(v, s, scores[key]) for v, by_seed in table.items() for s, scores in by_seed.items()]
    variants = sorted({v for v, _, _ in cells})
    seeds = sorted({s for _, s, _ in cells})
    df = len(cells) - len(variants) - len(seeds) + 1
    if df < 1:
        return math.nan, 0
    design = np.zeros((len(cells), len(variants) + len(seeds) - 1))
    for row, (v, s, _) in enumerate(cells):
        design[row, variants.index(v)] = 1.0
        if seeds.index(s) > 0:  # the first seed is the reference level
            design[row, len(variants) + seeds.index(s) - 1] = 1.0
    values = np.array([value for _, _, value in cells])
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    residuals = values - design @ coefficients
    return float(residuals @ residuals) / df, df


@dataclass(frozen=True)
class Comparison:
    """The leader against one other variant, on the seeds both have."""

    variant: str
    seeds: tuple[int, ...]
    key: str  # the metric compared: the rank metric, or the tie-break where the metric ties at every seed
    difference: float  # mean of leader - variant over the shared seeds
    t: float
    df: int
    p: float  # one-sided: the chance of a difference this large if the two were equal
    separated: bool

    def describe(self) -> str:
        if not self.seeds:
            return f"{self.variant}: no shared seed"
        p = f"p={self.p:.3f}" if math.isfinite(self.p) else "p undefined"
        return (f"{self.variant}: {self.key} {self.difference:+.2f} over seeds {','.join(map(str, self.seeds))} "
                f"(t={self.t:.2f}, df={self.df}, {p})")


def compare(table: Mapping[str, Mapping[int, Score]], top: str, confidence: float,
            metric_name: str = "grader") -> list[Comparison]:
    """The paired test of ``top`` against every other variant with a score (see the module docstring)."""
    variances = [pooled_residual_variance(table, key) for key in (0, 1)]
    alpha = 1.0 - confidence
    comparisons = []
    for variant in table:
        if variant == top:
            continue
        seeds = tuple(sorted(set(table[top]) & set(table[variant])))
        if not seeds:
            comparisons.append(Comparison(variant, (), metric_name, math.nan, math.nan, 0, math.nan, False))
            continue
        key = 0
        if all(table[top][s][0] == table[variant][s][0] for s in seeds):
            key = 1  # tied on the metric at every seed: the rule's tie-break decides, as it does for one run
        differences = [table[top][s][key] - table[variant][s][key] for s in seeds]
        mean = sum(differences) / len(differences)
        variance, df = variances[key]
        if df < 1 or not math.isfinite(variance):
            t, p = math.nan, math.nan
        elif variance == 0.0:
            t, p = (math.inf, 0.0) if mean > 0 else (0.0, 1.0)
        else:
            from scipy import stats  # here, not at the top: it is most of a second of every command's start

            t = mean / math.sqrt(2.0 * variance / len(seeds))
            p = float(stats.t.sf(t, df))
        comparisons.append(Comparison(variant, seeds, metric_name if key == 0 else TIE_BREAK_NAME, mean, t, df, p,
                                      separated=bool(math.isfinite(p) and p < alpha)))
    return comparisons


DECIDED, UNDECIDED, BY_RULE = "decided", "undecided", "by rule"


@dataclass(frozen=True)
class Decision:
    """An entry's answer. ``decided``: the leader is separated from every other variant; ``undecided``: some
    are not (``tied``); ``by rule``: no test was possible (one seed a variant, or one variant), the winner is
    the rule's pick and nothing more."""

    kind: str
    winner: Optional[str]
    confidence: float
    comparisons: tuple[Comparison, ...] = ()
    tied: tuple[str, ...] = ()
    seeds: Mapping[str, int] = field(default_factory=dict)  # seeds scored per variant
    out: Mapping[str, str] = field(default_factory=dict)  # behind for a reason: diverged, pruned by a test
    missing: Mapping[str, str] = field(default_factory=dict)  # without a result (failed, skipped here): not compared
    note: str = ""  # why the evidence stops where it does (a race's budget)

    @property
    def decided(self) -> bool:
        return self.kind == DECIDED

    def describe(self) -> str:
        """One line: what was decided, by which test and evidence."""
        text = self._describe()
        return f"{text}; {self.note}" if self.note else text

    def _describe(self) -> str:
        if self.winner is None:
            return "no variant has a result"
        level = f"{100 * self.confidence:g}%"
        among = f" (among the variants that ran; {', '.join(self.missing)} did not)" if self.missing else ""
        if self.kind == DECIDED:
            worst = max((c for c in self.comparisons if c.seeds), key=lambda c: c.p, default=None)
            evidence = f"; closest: {worst.describe()}" if worst is not None else ""
            gone = f"; out earlier: {', '.join(self.out)}" if self.out else ""
            return (f"decided: {self.winner}, separated from every other variant at {level} by a one-sided "
                    f"seed-paired t-test with pooled variance{evidence}{gone}{among}")
        if self.kind == UNDECIDED and not self.comparisons:
            return f"undecided: {self.winner} leads by the rule, {', '.join(self.tied)} not compared{among}"
        if self.kind == UNDECIDED:
            return (f"undecided: {self.winner} leads by the rule, but {', '.join(self.tied)} "
                    f"{'is' if len(self.tied) == 1 else 'are'} not separated from it at {level} "
                    f"(seed-paired t-test with pooled variance){among}")
        seeds = sorted(set(self.seeds.values()))
        if len(self.seeds) == 1 and not self.out:
            why = "the only variant that ran" if self.missing else "a single variant"
        else:
            why = "one seed a variant" if seeds == [1] else "no paired evidence"
        return f"by rule, not decided: {self.winner} ({why}){among}"


def decide(table: Mapping[str, Mapping[int, Score]], order: Sequence[str], confidence: float,
           metric_name: str = "grader", out: Optional[Mapping[str, str]] = None,
           missing: Optional[Mapping[str, str]] = None) -> Decision:
    """The entry's decision from the scores by seed of the variants still in the running. ``out``: variants
    already behind (diverged, or pruned by a test at a rung), each with why; ``missing``: variants without a
    result (failed, skipped on this machine), named and not compared. The leader is decided when every
    variant still in the running is separated from it by the test here."""
    out, missing = dict(out or {}), dict(missing or {})
    scored = {v: dict(table[v]) for v in order if table.get(v) and v not in out and v not in missing}
    counts = {v: len(s) for v, s in scored.items()}
    top = leader(scored, order)
    if top is None:
        return Decision(BY_RULE, None, confidence, seeds=counts, out=out, missing=missing)
    comparisons = tuple(compare(scored, top, confidence, metric_name))
    if not comparisons and not out:  # a single variant (the only one that ran)
        return Decision(BY_RULE, top, confidence, seeds=counts, out=out, missing=missing)
    if comparisons and all(math.isnan(c.p) for c in comparisons):
        return Decision(BY_RULE, top, confidence, comparisons, seeds=counts, out=out, missing=missing)
    tied = tuple(c.variant for c in comparisons if not c.separated)
    kind = DECIDED if not tied else UNDECIDED
    return Decision(kind, top, confidence, comparisons, tied, counts, out, missing)
