"""The ladder: an entry and every entry its bases build on, one row per step, from the root to the entry.

Each row is one entry of the chain: what it builds on (a profile, the winner of the step before, or a
variant the assignment prescribes), its winner by the one rule for "best", the winner's three metrics
(means over finished seeds, with the grader's standard deviation where there are several), its multi-task
gain Delta_m over single-task baselines with its seed deviation (an entry that names its baselines,
report.multitask), the gain in grader over the previous row's winner, its margin over the runner-up, what
decided the winner, and the variants within seed noise of it or skipped on this machine. Steps trained
with one seed cannot measure their own noise: their margin is compared with the grader's seed deviation
pooled over the chain's variants that have several seeds (problem4.final's three), and flagged when under
two of them. The rows come from the same run selections and tables as the entry reports, so the ladder
and the entry sections of the write-up never disagree.

    mtl-ablate report problem4.final --ladder     ->  reports/ladder.problem4.final.{md,csv}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from mtl.run.model import STATE_COLUMN, RunState
from report.store import ResultTables
from report.tables import TableError, to_csv, with_decision
from report.writeup import tables_of_entry

COLUMNS = ["step", "entry", "item", "builds on", "winner", "decision", "runs", "grader", "grader std", "Δm (%)",
           "Δm std", "IoU", "SI-logRMSE", "Δ grader", "margin", "rule", "note"]
NUMERIC = {"step", "runs", "grader", "grader std", "Δm (%)", "Δm std", "IoU", "SI-logRMSE", "Δ grader", "margin"}
NOISE_SDS = 2.0  # a winner whose margin over the runner-up is under this many seed standard deviations is flagged


def seed_noise(chain: Sequence[Any], results: ResultTables) -> float:
    """The grader's standard deviation across seeds, pooled over every variant of the chain that finished
    with several seeds (NaN when none did): the yardstick for steps trained with one seed."""
    in_chain = results.runs["ablation"].isin([e.id for e in chain])
    runs = results.runs[in_chain & (results.runs[STATE_COLUMN] == RunState.FINISHED)]
    squares, degrees = 0.0, 0
    for _, group in runs.groupby(["ablation", "variant"]):
        graders = group["grader"].dropna()
        if len(graders) > 1:
            squares += float(graders.var(ddof=1)) * (len(graders) - 1)
            degrees += len(graders) - 1
    return math.sqrt(squares / degrees) if degrees else math.nan


def ladder_frame(chain: Sequence[Any], results: ResultTables, noise_rule: str = "paired",
                 selections: dict[str, Any] | None = None, noise: float | None = None) -> pd.DataFrame:
    """One row per entry of ``chain`` (root first), raw values: NaN where an entry has no scored run.
    ``selections`` (entry id -> mtl.ablate.selection.Selection) add what stood in for a prescribed base
    that could not run here; ``noise`` is :func:`seed_noise` of the chain when the caller has it."""
    rows = []
    previous = math.nan
    noise = seed_noise(chain, results) if noise is None else noise
    for number, entry in enumerate(chain, start=1):
        builds_on = entry.base_kind
        selection = (selections or {}).get(entry.id)
        if selection is not None and entry.base_entry is None and selection.profile != entry.base:
            builds_on = f"profile {selection.profile} (declared: {entry.base})"  # its runs' (--profile)
        if selection is not None and selection.base_note:
            builds_on += f"; here: {selection.base_note}"
        row: dict[str, Any] = {"step": number, "entry": entry.id, "item": entry.item, "builds on": builds_on,
                               "winner": "", "decision": "", "runs": 0, "grader": math.nan, "grader std": math.nan,
                               "Δm (%)": math.nan, "Δm std": math.nan, "IoU": math.nan, "SI-logRMSE": math.nan,
                               "Δ grader": math.nan, "margin": math.nan, "rule": "", "note": ""}
        subset = results.for_ablation(entry.id)
        if subset.runs.empty:
            row["note"] = "no runs recorded"
            rows.append(row)
            continue
        try:
            tables = tables_of_entry(entry, subset, noise_rule, results)
        except TableError as exc:
            row["note"] = str(exc)
            rows.append(row)
            continue
        if selection is not None and selection.racing is not None:
            tables = with_decision(tables, selection.race_decision)
        decision = tables.decision
        row["decision"] = decision.kind if decision is not None else "race not over"
        summary = tables.summary
        row["runs"] = int(summary["finished"].sum())
        if tables.winner is None:
            row["note"] = _note(tables, math.nan, noise)
            rows.append(row)
            continue
        best = summary.loc[summary["variant"] == tables.winner].iloc[0]
        others = summary.loc[summary["variant"] != tables.winner, "grader"].dropna()
        row["margin"] = best["grader"] - others.max() if len(others) else math.nan
        row["note"] = _note(tables, row["margin"], noise)
        row.update({"winner": tables.winner, "grader": best["grader"], "grader std": best["grader_std"],
                    "Δm (%)": best.get("delta_m", math.nan), "Δm std": best.get("delta_m_std", math.nan),
                    "IoU": best["iou"], "SI-logRMSE": best["si_logrmse"], "rule": tables.winner_rule})
        if not math.isfinite(best["grader"]):  # a race its budget ended at a rung: the winner's runs stand there
            paused = tables.runs[tables.runs["variant"] == tables.winner]
            row.update({"grader": paused["grader"].mean(), "IoU": paused["iou"].mean(),
                        "SI-logRMSE": paused["si_logrmse"].mean(), "runs": len(paused)})
            epoch = int(paused["epoch"].max()) if paused["epoch"].notna().any() else 0
            row["note"] = "; ".join(p for p in (f"its runs paused by the race's budget (best by epoch {epoch})",
                                                row["note"]) if p)
        if decision is not None and decision.note:
            row["note"] = "; ".join(p for p in (row["note"], decision.note) if p)
        row["Δ grader"] = row["grader"] - previous
        previous = row["grader"]
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _note(tables: Any, margin: float, noise: float) -> str:
    parts = []
    if math.isfinite(margin) and math.isfinite(noise) and margin < NOISE_SDS * noise:
        parts.append(f"margin under {NOISE_SDS:g} seed sd ({NOISE_SDS * noise:.2f})")
    within = tables.summary[tables.summary["within_noise"].astype(str).str.startswith("yes")]["variant"].tolist()
    if within:
        parts.append(f"within seed noise: {', '.join(map(str, within))}")
    skipped = tables.runs[tables.runs[STATE_COLUMN] == RunState.SKIPPED]["variant"].tolist()
    if skipped:
        parts.append(f"skipped here: {', '.join(map(str, dict.fromkeys(skipped)))}")
    return "; ".join(parts)


DELTA_M_COLUMNS = ["Δm (%)", "Δm std"]


def _has_delta_m(frame: pd.DataFrame) -> bool:
    """Whether some step has a Δm (an entry that names single-task baselines, and found them)."""
    return bool(frame["Δm (%)"].notna().any())


def ladder_markdown(frame: pd.DataFrame) -> str:
    """The ladder as a Markdown table; without the Δm columns when no step has a Δm (the CSV keeps them)."""
    shown = frame.copy()
    for column in ("grader", "grader std", "Δm std", "IoU", "SI-logRMSE"):
        shown[column] = [_number(v) for v in shown[column]]
    for column in ("Δ grader", "Δm (%)"):
        shown[column] = [_number(v, signed=True) for v in shown[column]]
    if not _has_delta_m(frame):
        shown = shown.drop(columns=DELTA_M_COLUMNS)
    shown["margin"] = [_number(v) for v in shown["margin"]]
    shown["runs"] = shown["runs"].astype(str)
    shown["step"] = shown["step"].astype(str)
    align = ["right" if column in NUMERIC else "left" for column in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def _number(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def write_ladder(chain: Sequence[Any], results: ResultTables, out_dir: Path, noise_rule: str = "paired",
                 selections: dict[str, Any] | None = None) -> tuple[str, list[Path]]:
    """Writes ``ladder.<last entry>.md`` and ``.csv`` under ``out_dir``; returns the Markdown and the files."""
    noise = seed_noise(chain, results)
    frame = ladder_frame(chain, results, noise_rule, selections, noise)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"ladder.{chain[-1].id}"
    footer = (f"Seed noise: grader standard deviation {noise:.2f}, pooled over the variants with several seeds."
              if math.isfinite(noise) else "Seed noise: unknown (no variant of the chain has several finished seeds).")
    if not _has_delta_m(frame):
        footer += (" Δm: none, as no step has single-task baselines to measure it against (an entry's "
                   "single_task_baselines).")
    markdown = ladder_markdown(frame) + "\n" + footer + "\n"
    files = [Path(f"{stem}.md"), Path(f"{stem}.csv")]
    files[0].write_text(markdown)
    files[1].write_text(to_csv(frame))
    return markdown, files
