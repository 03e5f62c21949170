"""Result tables of one ablation entry: every run at its best-grader validation step, and with several
seeds the mean and standard deviation per variant, the winner marked and differences within seed noise
flagged. Rendered as Markdown (tabulate), LaTeX (booktabs) and CSV.

Winner: chosen as the planner chooses the base of a ``best of`` entry (mtl.ablate.planner.resolve_winner):
each finished run scores its best value of the entry's ``rank_by`` metric (default: the highest
``val/grader``), a variant scores the mean over its finished runs, the best variant wins; a tie goes to
the higher mean IoU - SI-logRMSE (mtl.run.best's one rule for "best"), then to the variant listed first.
``EntryTables.winner_rule`` says which of these decided. The variant means and standard deviations are over
finished runs too.

Within seed noise (rule ``welch``, the default): a Welch t-test of the variant's run scores against the
winner's gives p >= 0.05; rule ``max_std``: |difference of means| is below the larger of the two
standard deviations. Both need at least two scored runs on each side and say ``n/a`` otherwise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from mtl.ablate.decision import Decision, Score, decide
from mtl.ablate.race import RaceSettings
from mtl.config import RUN_INVARIANT_KEYS, format_config_value
from mtl.run.best import deciding_rule
from mtl.run.model import GRADER_KEY, STATE_COLUMN, RunState
from report.multitask import Gain
from report.store import RUN_COLUMNS, ResultTables

# The default is the decision's own test (docs/DESIGN.md §7.1): one test per table.
PAIRED_RULE = "paired"
NOISE_RULES = {
    PAIRED_RULE: "not separated from the winner by the decision's one-sided seed-paired t-test with pooled "
                 "variance (p: that test's)",
    "welch": "Welch t-test against the winner's seeds, p >= 0.05",
    "max_std": "|mean difference| < the larger standard deviation of the two variants",
}
NOISE_ALPHA = 0.05
METRICS = ["grader", "iou", "si_logrmse"]
# The run table's column with each run's W&B page ("" for a run not logged online).
LINK_COLUMN = "url"
METRIC_LABELS = {"grader": "grader", "iou": "IoU", "si_logrmse": "SI-logRMSE"}
# Keys that tell runs apart without being a question's parameter.
NOT_PARAMETERS = set(RUN_INVARIANT_KEYS) | {"seed"}


class TableError(ValueError):
    """A table cannot be built as asked; the message names the entry and the key."""


@dataclass
class EntryTables:
    """The tables of one entry. ``runs`` and ``variants`` hold raw values (the CSV); ``*_display`` the
    formatted text cells that Markdown and LaTeX show."""

    ablation: str
    parameters: list[str]
    runs: pd.DataFrame
    summary: pd.DataFrame  # one row per variant (means over finished seeds); the figures use it too
    winner: str | None
    noise_rule: str
    rank_metric: str = GRADER_KEY
    rank_mode: str = "max"
    # What decided the winner against the runner-up ("by grader", "tie on grader 0.00: decided by ...").
    winner_rule: str = ""
    # What the evidence says of the winner (mtl.ablate.decision): decided, undecided or by rule only.
    decision: Decision | None = None
    # Delta_m over the single-task baselines the entry names (report.multitask), when it names them.
    gain: Gain | None = None

    @property
    def delta_label(self) -> str:
        return "grader" if self.rank_metric == GRADER_KEY else _score_name(self.rank_metric)

    @property
    def several_seeds(self) -> bool:
        return bool((self.summary["seeds"] > 1).any())

    @property
    def variants(self) -> pd.DataFrame | None:
        """The per-variant table, shown only when some variant has several seeds."""
        return self.summary.drop(columns=["tie_break"], errors="ignore") if self.several_seeds else None

    @functools.cached_property
    def runs_display(self) -> pd.DataFrame:
        """The run table's text cells; a ``url`` column, when some run was online, stays for
        :func:`to_markdown` to link the run names with (and :func:`to_latex` drops it)."""
        hidden = ["source"] + ([STATE_COLUMN] if (self.runs[STATE_COLUMN] == RunState.FINISHED).all() else [])
        return display_frame(self.runs.drop(columns=hidden)).rename(columns=self._score_headers())

    @functools.cached_property
    def variants_display(self) -> pd.DataFrame | None:
        if self.variants is None:
            return None
        return display_frame(self.variants).rename(columns=self._score_headers())

    def _score_headers(self) -> dict[str, str]:
        # The rank score is shown under the metric's name ("best si_logrmse"); with the grader it is the
        # grader column itself and only the difference column needs naming.
        return {HEADERS["score"]: self.delta_label, HEADERS["score_std"]: f"{self.delta_label} std",
                HEADERS["delta"]: f"Δ {self.delta_label}"}


# ---------------------------------------------------------------------------------------- building
def varied_parameters(runs: pd.DataFrame, requested: Iterable[str] | None = None) -> list[str]:
    """The config keys to show: ``requested`` (each must be a config column), else every config key
    whose value differs between the runs (run-invariant keys such as paths and the seed left out)."""
    config_columns = [c for c in runs.columns if c not in RUN_COLUMNS]
    if requested is not None:
        requested = list(requested)
        unknown = [c for c in requested if c not in config_columns]
        if unknown:
            raise TableError(f"report columns {unknown} are not config keys of these runs")
        return requested
    varied = []
    for column in config_columns:
        if column in NOT_PARAMETERS:
            continue
        if len(set(map(_hashable, runs[column].tolist()))) > 1:
            varied.append(column)
    return varied


def entry_tables(results: ResultTables, ablation: str, columns: Iterable[str] | None = None,
                 noise_rule: str = "paired", rank_metric: str = GRADER_KEY, rank_mode: str = "max",
                 variant_order: Iterable[str] | None = None) -> EntryTables:
    """Tables of the runs of one ablation. ``columns``: config keys to show (default: those that vary);
    ``variant_order``: the entry's variant order (default: sorted by the shown parameters)."""
    if noise_rule not in NOISE_RULES:
        raise TableError(f"noise rule {noise_rule!r} is not one of {sorted(NOISE_RULES)}")
    if rank_mode not in ("max", "min"):
        raise TableError(f"rank mode {rank_mode!r} is not 'max' or 'min'")
    runs = results.runs[results.runs["ablation"] == ablation]
    if runs.empty:
        raise TableError(f"no runs of ablation {ablation!r}")
    parameters = varied_parameters(runs, columns)
    runs = _ordered(runs, parameters, list(variant_order) if variant_order is not None else None)
    runs = runs.assign(rank_score=_run_scores(runs, results, rank_metric, rank_mode))
    summary = _variant_summary(runs, parameters, noise_rule, rank_mode)
    winner = _winner(summary, rank_mode)
    rule = _winner_rule(summary, rank_mode, winner, _score_name(rank_metric)[len("best "):])
    summary["winner"] = np.where(summary["variant"] == winner, "yes", "")
    if rank_metric == GRADER_KEY:  # the score is the grader column already
        summary = summary.drop(columns=["score", "score_std"])
    decision = frame_decision(runs, list(dict.fromkeys(runs["variant"])), _score_name(rank_metric)[len("best "):],
                              rank_mode)
    run_table = _run_table(runs, parameters, winner, rank_metric)
    tables = EntryTables(ablation=ablation, parameters=parameters, runs=run_table,
                         summary=summary, winner=winner, noise_rule=noise_rule,
                         rank_metric=rank_metric, rank_mode=rank_mode, winner_rule=rule)
    return with_decision(tables, decision)


def frame_decision(runs: pd.DataFrame, order: list[str], metric_name: str, rank_mode: str = "max",
                   confidence: float = RaceSettings().confidence) -> Decision:
    """The decision over an entry's finished runs (mtl.ablate.decision): each run's score is its rank score
    and IoU - SI-logRMSE at its best point; a variant with a diverged run is out, one with a failed or
    skipped run is named as missing."""
    table: dict[str, dict[int, Score]] = {}
    out: dict[str, str] = {}
    missing: dict[str, str] = {}
    sign = 1.0 if rank_mode == "max" else -1.0  # scores rank higher-is-better, as mtl.run.best.point_rank does
    for variant, seed, state, score, iou, si in zip(runs["variant"], runs["seed"], runs[STATE_COLUMN],
                                                    runs["rank_score"], runs["iou"], runs["si_logrmse"]):
        if state == RunState.DIVERGED:
            out.setdefault(str(variant), f"diverged (seed {seed})")
        elif state in (RunState.FAILED, RunState.SKIPPED):
            missing.setdefault(str(variant), f"{state} (seed {seed})")
        elif state == RunState.FINISHED and math.isfinite(score) and isinstance(seed, (int, np.integer)):
            tie = iou - si if math.isfinite(iou) and math.isfinite(si) else -math.inf
            table.setdefault(str(variant), {})[int(seed)] = (sign * float(score), float(tie))
    table = {v: s for v, s in table.items() if v not in out and v not in missing}
    return decide(table, order, confidence, metric_name, out=out, missing=missing)


WINNER_MARKS = {"decided": "yes, decided", "undecided": "leads, undecided", "by rule": "by rule only"}


def with_gain(tables: EntryTables, gain: Gain) -> EntryTables:
    """``tables`` with Delta_m beside the grader: each run's, and each variant's mean and seed deviation."""
    tables.gain = gain
    tables.runs.insert(tables.runs.columns.get_loc("grader") + 1, "delta_m",
                       [gain.per_run.get(str(run), math.nan) for run in tables.runs["run"]])
    stats = [gain.per_variant.get(str(v), (math.nan, math.nan, 0)) for v in tables.summary["variant"]]
    at = tables.summary.columns.get_loc("grader_std") + 1
    tables.summary.insert(at, "delta_m", [mean for mean, _, _ in stats])
    tables.summary.insert(at + 1, "delta_m_std", [std for _, std, _ in stats])
    tables.__dict__.pop("runs_display", None)  # cached renderings follow the new columns
    tables.__dict__.pop("variants_display", None)
    return tables


def with_decision(tables: EntryTables, decision: Decision | None) -> EntryTables:
    """``tables`` with the winner the decision names (a race's may differ from the finished runs' means) and
    its winner column saying how far the evidence goes."""
    tables.decision = decision
    if decision is not None and decision.winner is not None:
        tables.winner = decision.winner
    mark = WINNER_MARKS[decision.kind] if decision is not None else "yes"
    for frame in (tables.runs, tables.summary):
        frame["winner"] = np.where(frame["variant"] == tables.winner, mark, "")
    if tables.noise_rule == PAIRED_RULE and decision is not None:
        versus = {c.variant: ("yes" if not c.separated else "no") + (f" (p={c.p:.3f})" if math.isfinite(c.p) else "")
                  for c in decision.comparisons}
        versus.update({v: f"out: {why}" for v, why in decision.out.items()})
        versus.update({v: f"missing: {why}" for v, why in decision.missing.items()})
        tables.summary["within_noise"] = [versus.get(str(v), "") for v in tables.summary["variant"]]
    tables.__dict__.pop("runs_display", None)  # cached renderings follow the new column
    tables.__dict__.pop("variants_display", None)
    return tables


def _score_name(metric: str) -> str:
    return "best " + metric[len("val/"):] if metric.startswith("val/") else "best " + metric


def _run_scores(runs: pd.DataFrame, results: ResultTables, metric: str, mode: str) -> np.ndarray:
    """Each run's best value of ``metric`` over its validation points (NaN when it has none)."""
    if metric == GRADER_KEY:  # in the runs frame already: the points (read from traces) are not needed
        return runs["grader"].to_numpy(dtype=float)
    points = results.points
    column = metric[len("val/"):] if metric.startswith("val/") else metric
    if column not in points.columns:
        raise TableError(f"rank metric {metric!r} is not among the logged validation metrics")
    best = points.groupby("run")[column].agg("max" if mode == "max" else "min")
    return runs["run"].map(best).to_numpy(dtype=float)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _sort_key(value: Any) -> tuple:
    # Mixed columns (None next to numbers, tuples next to strings) still sort, deterministically.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, str(value))


def _ordered(runs: pd.DataFrame, parameters: list[str], variant_order: list[str] | None) -> pd.DataFrame:
    def key(variant: str, seed: Any, values: tuple) -> tuple:
        if variant_order is not None:
            head: tuple = (variant_order.index(variant) if variant in variant_order else len(variant_order),)
        else:
            head = tuple(_sort_key(v) for v in values)
        return head + (variant, _sort_key(seed))

    columns = [runs[p].tolist() for p in parameters]
    keys = [key(str(variant), seed, tuple(c[i] for c in columns))
            for i, (variant, seed) in enumerate(zip(runs["variant"].tolist(), runs["seed"].tolist()))]
    order = sorted(range(len(runs)), key=lambda i: keys[i])
    return runs.iloc[order].reset_index(drop=True)


def _variant_summary(runs: pd.DataFrame, parameters: list[str], noise_rule: str, rank_mode: str) -> pd.DataFrame:
    rows = []
    finished_mask = (runs[STATE_COLUMN] == RunState.FINISHED).to_numpy()
    arrays = {m: runs[c].to_numpy(dtype=float) for m, c in [*((m, m) for m in METRICS), ("score", "rank_score")]}
    arrays["tie_break"] = arrays["iou"] - arrays["si_logrmse"]  # at each run's best point
    first_values = {p: runs[p].tolist() for p in parameters}
    groups = runs.groupby("variant", sort=False).indices
    for variant in dict.fromkeys(runs["variant"]):  # in table order
        positions = groups[variant]
        finished = positions[finished_mask[positions]]
        row: dict[str, Any] = {"variant": variant}
        for p in parameters:
            row[p] = first_values[p][positions[0]]
        row["seeds"] = len(positions)
        row["finished"] = len(finished)
        for metric, array in arrays.items():
            values = array[finished]
            values = values[np.isfinite(values)]
            row[metric] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            if metric == "score":
                row["_scores"] = values
        rows.append(row)
    summary = pd.DataFrame(rows)
    winner = _winner(summary, rank_mode)
    if winner is not None:
        best = summary.loc[summary["variant"] == winner].iloc[0]
        summary["delta"] = summary["score"] - best["score"]
        summary["within_noise"] = [
            "" if variant == winner else _within_noise(scores, best["_scores"], noise_rule)
            for variant, scores in zip(summary["variant"], summary["_scores"])
        ]
    else:
        summary["delta"] = math.nan
        summary["within_noise"] = ""
    # The tie-break mean stays for the winner's rule (not displayed); its spread is of no use.
    return summary.drop(columns=["_scores", "tie_break_std"])


def _variant_ranks(summary: pd.DataFrame, rank_mode: str) -> list[tuple[float, float]]:
    """Each variant's rank by the one rule for "best" (mtl.run.best): mean score, then mean IoU - SI-logRMSE."""
    sign = 1.0 if rank_mode == "max" else -1.0
    ranks = []
    for score, tie in zip(summary["score"].to_numpy(dtype=float), summary["tie_break"].to_numpy(dtype=float)):
        ranks.append((sign * score if math.isfinite(score) else -math.inf, tie if math.isfinite(tie) else -math.inf))
    return ranks


def _winner(summary: pd.DataFrame, rank_mode: str) -> str | None:
    scores = summary["score"].to_numpy(dtype=float)
    if not np.isfinite(scores).any():
        return None
    ranks = _variant_ranks(summary, rank_mode)
    best = max(range(len(ranks)), key=lambda i: (ranks[i], -i))  # equal ranks: the first listed
    return str(summary["variant"].iloc[best])


def _winner_rule(summary: pd.DataFrame, rank_mode: str, winner: str | None, metric: str) -> str:
    """Which part of the rule set the winner apart from the runner-up, in words."""
    if winner is None:
        return ""
    ranks = _variant_ranks(summary, rank_mode)
    index = summary["variant"].tolist().index(winner)
    others = [r for i, r in enumerate(ranks) if i != index and math.isfinite(r[0])]
    if not others:
        return f"winner by {metric} (the only variant scored)"
    rule = deciding_rule(ranks[index], max(others), metric)
    return "winner " + rule if rule.startswith("by ") else rule


def _within_noise(values: np.ndarray, winner_values: np.ndarray, rule: str) -> str:
    if len(values) < 2 or len(winner_values) < 2:
        return "n/a"
    if rule == PAIRED_RULE:
        return ""  # filled in from the decision (with_decision)
    if rule == "max_std":
        difference = abs(values.mean() - winner_values.mean())
        return "yes" if difference < max(values.std(ddof=1), winner_values.std(ddof=1)) else "no"
    if values.std() == 0 and winner_values.std() == 0:  # no spread at all: any difference is real
        return "yes" if values.mean() == winner_values.mean() else "no"
    return "yes" if welch_p_value(values, winner_values) >= NOISE_ALPHA else "no"


def welch_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test (as scipy.stats.ttest_ind(equal_var=False)).

    Written out with scipy.special.stdtr: importing scipy.stats costs seconds, scipy.special a fraction.
    """
    from scipy.special import stdtr

    n_a, n_b = len(a), len(b)
    var_a, var_b = a.var(ddof=1) / n_a, b.var(ddof=1) / n_b
    t = (a.mean() - b.mean()) / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    return float(2.0 * stdtr(df, -abs(t)))


def _run_table(runs: pd.DataFrame, parameters: list[str], winner: str | None, rank_metric: str) -> pd.DataFrame:
    columns = ["run", "variant", "seed", *parameters, *METRICS, "step", "epoch"]
    for optional in ("params", "gflops"):
        if runs[optional].notna().any():
            columns.append(optional)
    columns.append(STATE_COLUMN)  # in the CSV always; displayed when some run has not finished
    table = runs[columns].copy()
    if rank_metric != GRADER_KEY:
        table["score"] = runs["rank_score"]
    table["winner"] = np.where(runs["variant"] == winner, "yes", "")
    if (runs["note"] != "").any():
        table["note"] = runs["note"]
    table["source"] = runs["source"]  # where the run lives (for export); never displayed
    if "url" in runs and (runs["url"].fillna("") != "").any():
        table[LINK_COLUMN] = runs["url"].fillna("")  # the CSV's url column; Markdown links the run name
    return table


# ---------------------------------------------------------------------------------------- display
HEADERS = {
    "run": "run", "variant": "variant", "seed": "seed", "seeds": "seeds", "finished": "finished",
    "grader": "grader", "iou": "IoU", "si_logrmse": "SI-logRMSE", "step": "step", "epoch": "epoch",
    "params": "params (M)", "gflops": "GFLOPs", STATE_COLUMN: STATE_COLUMN, "winner": "winner", "note": "note",
    "grader_std": "grader std", "iou_std": "IoU std", "si_logrmse_std": "SI-logRMSE std",
    "delta": "Δ", "within_noise": "within noise", "score": "score", "score_std": "score std",
    "delta_m": "Δm (%)", "delta_m_std": "Δm std",
}
_TWO_DECIMALS = {"grader", "iou", "si_logrmse", "grader_std", "iou_std", "si_logrmse_std", "delta", "gflops",
                 "score", "score_std", "delta_m", "delta_m_std"}
_WHOLE = {"step", "epoch", "seed", "seeds", "finished"}
NUMERIC_DISPLAY = _TWO_DECIMALS | _WHOLE | {"params"}


def format_value(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        # A missing number is a dash; a config key set to None (its default rule applies) says so.
        return "–" if column in NUMERIC_DISPLAY else "none" if value is None else ""
    if column in _TWO_DECIMALS:
        return f"{value:+.2f}" if column in ("delta", "delta_m") else f"{value:.2f}"
    if column == "params":
        return f"{value / 1e6:.2f}"
    if column in _WHOLE:
        return str(int(value))
    return format_config_value(value, ", ", float_format="g")


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells with the headers of :data:`HEADERS` (config keys keep their names)."""
    shown = pd.DataFrame({column: [format_value(column, v) for v in frame[column]] for column in frame.columns})
    return shown.rename(columns=lambda c: HEADERS.get(c, c))


def _is_numeric_header(header: str) -> bool:
    numeric = {HEADERS[c] for c in NUMERIC_DISPLAY}
    return header in numeric or header.startswith(("Δ ", "best ")) or header.endswith(" std")


def to_markdown(shown: pd.DataFrame) -> str:
    """A pipe table; numbers right-aligned, every cell exactly as formatted. With a ``url`` column, the
    first column's cells link to it (where it is not empty) and the column itself is not shown."""
    shown = _linked(shown)
    align = ["right" if _is_numeric_header(c) else "left" for c in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def to_latex(shown: pd.DataFrame) -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule); cells and headers LaTeX-escaped. Written
    out by hand: pandas' Styler takes seconds over a thousand-run report."""
    shown = shown.drop(columns=[LINK_COLUMN], errors="ignore")  # no links: the report loads no hyperref
    column_format = "".join("r" if _is_numeric_header(c) else "l" for c in shown.columns)
    rows = [" & ".join(latex_escape(c) for c in shown.columns)]
    rows += [" & ".join(latex_escape(cell) for cell in cells) for cells in shown.itertuples(index=False)]
    lines = [rf"\begin{{tabular}}{{{column_format}}}", r"\toprule", rows[0] + r" \\", r"\midrule",
             *(row + r" \\" for row in rows[1:]), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Text as LaTeX prints it: the special characters escaped, the Unicode the tables use spelled out."""
    text = "".join(_LATEX_SPECIALS.get(c, c) for c in str(text))
    return text.replace("–", "--").replace("Δ", r"$\Delta$").replace("≥", r"$\geq$")


def _linked(shown: pd.DataFrame) -> pd.DataFrame:
    if LINK_COLUMN not in shown.columns:
        return shown
    first = shown.columns[0]
    cells = [f"[{_markdown_text(text)}]({_markdown_url(url)})" if url else text
             for text, url in zip(shown[first], shown[LINK_COLUMN])]
    return shown.drop(columns=[LINK_COLUMN]).assign(**{first: cells})


def _markdown_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace("|", "\\|")


def _markdown_url(url: str) -> str:
    # Characters that would end the link or the table cell, percent-encoded.
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("|", "%7C")


def to_csv(frame: pd.DataFrame) -> str:
    """Raw values (full precision; tuples as a, b, c)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(lambda v: isinstance(v, tuple)).any():
            out[column] = out[column].map(lambda v: ", ".join(map(str, v)) if isinstance(v, tuple) else v)
    return out.to_csv(index=False)
