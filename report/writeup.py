"""The write-up skeleton: one section per ablation entry, in assignment order, with the question, the
tables, the figures, the config differences that answer it and a marked place for the conclusion.

Output folder layout (``reports/`` by default)::

    report.md  report.tex                       the write-up (Markdown and LaTeX)
    tables/<entry>.runs.{md,tex,csv}            every run at its best-grader validation step
    tables/<entry>.variants.{md,tex,csv}        mean and std per variant (entries with several seeds)
    figures/<entry>.<kind>.{png,pdf}            curves, bars, qualitative, depth_histogram

The conclusion placeholders are ``<!-- CONCLUSION(<entry>): ... -->`` in Markdown and
``% TODO(conclusion): <entry>`` in LaTeX, so a search finds every answer still to write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from mtl.ablate.arguments import command_line
from mtl.ablate.entry import FIGURE_KINDS
from mtl.config import RUN_INVARIANT_KEYS, Config, format_config_value
from mtl.run.layout import RunDirectory
from mtl.run.model import GRADER_KEY, STATE_COLUMN, RunState
from report.multitask import entry_gain, single_task_variants
from report.store import ResultTables
from report.tables import (
    NOISE_RULES,
    EntryTables,
    TableError,
    entry_tables,
    latex_escape,
    to_csv,
    to_latex,
    to_markdown,
    with_decision,
    with_gain,
)

FORMATS = ("md", "latex", "csv")
MAX_IMAGE_RUNS = 4  # variants shown in the image figures: the winner first, then in table order
QUALITATIVE_IMAGES = 3


class ReportError(ValueError):
    """The report cannot be written as asked (unknown entry, bad format)."""


@dataclass
class EntryReport:
    entry: Any  # mtl.ablate.entry.Entry
    tables: EntryTables | None
    table_files: dict[str, list[Path]] = field(default_factory=dict)  # format -> files
    rendered: dict[tuple[str, str], str] = field(default_factory=dict)  # (table kind, md|latex) -> text
    figures: dict[str, list[Path]] = field(default_factory=dict)  # kind -> [png, pdf]
    problems: list[str] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    selection: Any = None  # mtl.ablate.selection.Selection: the profile used and the stale runs left out


@dataclass
class ReportResult:
    out_dir: Path
    sections: list[EntryReport]
    files: list[Path]

    @property
    def problems(self) -> list[str]:
        return [f"{s.entry.id}: {p}" for s in self.sections for p in s.problems]


# ---------------------------------------------------------------------------------------- one entry
def config_differences(runs: pd.DataFrame, variant_order: Sequence[str]) -> dict[str, Any]:
    """What the runs of an entry share and how they differ: ``common`` = keys equal in every run that
    differ from the template defaults (the inherited winners and fixed overrides); ``varied`` = per
    variant, its values of the keys that differ between runs (seed and run-invariant keys left out)."""
    defaults = Config().model_dump(mode="json")
    skip = set(RUN_INVARIANT_KEYS) | {"seed"}
    common, varying = {}, []
    for key, default in defaults.items():
        if key not in runs.columns or key in skip:
            continue
        values = [_hashable(v) for v in runs[key].tolist()]
        if len(set(values)) == 1:
            if _hashable(default) != values[0]:
                common[key] = values[0]
        else:
            varying.append(key)
    variants = runs["variant"].tolist()
    first = {v: variants.index(v) for v in variant_order}
    columns = {k: runs[k].tolist() for k in varying}
    varied = {str(v): {k: columns[k][first[v]] for k in varying} for v in variant_order}
    return {"common": common, "varied": varied, "varying": varying}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def image_runs(tables: EntryTables, runs: pd.DataFrame) -> list[tuple[str, Path]]:
    """(label, run dir) of the best finished run of each variant that wrote predictions, winner first."""
    finished = runs[(runs[STATE_COLUMN] == RunState.FINISHED) & runs["grader"].notna()]
    chosen = []
    order = list(dict.fromkeys(tables.summary["variant"]))
    if tables.winner in order:
        order.remove(tables.winner)
        order.insert(0, tables.winner)
    for variant in order:
        group = finished[finished["variant"] == variant]
        if group.empty:
            continue
        best = group.sort_values(["grader", "step"], ascending=[False, True]).iloc[0]
        run_dir = Path(best["source"])
        if RunDirectory(run_dir).prediction_dir("semseg").is_dir():
            chosen.append((str(variant), run_dir))
        if len(chosen) == MAX_IMAGE_RUNS:
            break
    return chosen


def dataset_root_of(config_row: pd.Series) -> Path:
    """Where a run's dataset lives: its ``dataset_root``, else (synthetic) the cache folder keyed by its parameters."""
    if config_row.get("dataset_root"):
        return Path(config_row["dataset_root"])
    if config_row.get("dataset") == "synthetic":
        from mtl.data.synthetic import SyntheticParams, default_root

        keys = ["num_train", "num_val", "num_test", "height", "width", "seed"]
        return default_root(SyntheticParams(**{k: int(config_row[f"synthetic_{k}"]) for k in keys}))
    raise ValueError(f"run {config_row.get('run')} has no dataset_root; pass --dataset-root")


def run_command(entry: Any, runs_dir: Path | None) -> str:
    """The ``mtl-ablate run`` line that trains ``entry`` where this report reads its runs; without
    ``runs_dir`` (a report that travels, as in the export archive) it names no local folder."""
    if runs_dir is None:
        return command_line("run", [entry.id])
    return command_line("run", [entry.id], runs_dir=runs_dir, ablations_dir=getattr(entry, "ablations_dir", None))


def tables_of_entry(entry: Any, subset: ResultTables, noise_rule: str = "paired",
                    results: ResultTables | None = None) -> EntryTables:
    """The tables of ``entry``'s runs as its file asks: its report columns, ranking metric and variant order,
    and Delta_m over the single-task baselines it names (their runs read from ``results``)."""
    variant_order = [v.name for v in entry.variants] if getattr(entry, "variants", None) else None
    tables = entry_tables(subset, entry.id, columns=entry.report.columns or None, noise_rule=noise_rule,
                          rank_metric=entry.rank_by.metric, rank_mode=entry.rank_by.mode,
                          variant_order=variant_order)
    baselines = getattr(entry, "single_task_baselines", None)
    if baselines and results is not None:
        baseline_runs = results.for_ablation(baselines).runs
        tables = with_gain(tables, entry_gain(subset.runs[subset.runs["ablation"] == entry.id], baseline_runs,
                                              baselines))
    return tables


def build_entry_report(entry: Any, results: ResultTables, out_dir: Path, formats: Sequence[str] = FORMATS,
                       draw_figures: bool = True, dataset_root: Path | None = None,
                       noise_rule: str = "paired", runs_dir: Path | None = None, selection: Any = None) -> EntryReport:
    """Tables and figures of one entry, written under ``out_dir``; ``selection``: its runs as planned
    (mtl.ablate.selection), whose race decision, for a raced entry, is the entry's."""
    subset = results.for_ablation(entry.id)
    if subset.runs.empty:
        return EntryReport(entry=entry, tables=None, selection=selection,
                           problems=[f"no runs recorded yet (`{run_command(entry, runs_dir)}`)"])
    tables = tables_of_entry(entry, subset, noise_rule, results)
    if selection is not None and selection.racing is not None:
        tables = with_decision(tables, selection.race_decision)
    report = EntryReport(entry=entry, tables=tables, selection=selection)
    report.setup = config_differences(subset.runs, list(tables.summary["variant"]))
    report.rendered = render_tables(tables, caption=f"{entry.item}: {entry.id}", label_prefix=f"tab:{entry.id}")
    report.table_files = write_tables(tables, report.rendered, out_dir / "tables", formats)
    if draw_figures:
        _draw_figures(report, tables, subset, out_dir / "figures", dataset_root)
    return report


def _table_parts(tables: EntryTables) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    parts = [("runs", tables.runs, _runs_shown(tables))]
    if tables.variants is not None:
        parts.append(("variants", tables.variants, tables.variants_display))
    return parts


def _runs_shown(tables: EntryTables) -> pd.DataFrame:
    # The run name starts with its variant, and notes are listed under the table, not in it.
    shown = tables.runs_display
    return shown.drop(columns=[c for c in ("variant", "note", "source") if c in shown.columns])


def notes(tables: EntryTables) -> list[str]:
    if "note" not in tables.runs:
        return []
    return [f"{run}: {note}" for run, note in zip(tables.runs["run"], tables.runs["note"]) if note]


def render_tables(tables: EntryTables, caption: str, label_prefix: str) -> dict[tuple[str, str], str]:
    """Markdown and LaTeX text of every table of an entry, rendered once for the table files and the write-up."""
    rendered = {}
    for kind, _, shown in _table_parts(tables):
        rendered[(kind, "md")] = markdown_table(tables, kind, shown)
        rendered[(kind, "latex")] = latex_table(tables, kind, shown, caption, f"{label_prefix}.{kind}")
    return rendered


def write_tables(tables: EntryTables, rendered: dict[tuple[str, str], str], folder: Path,
                 formats: Sequence[str]) -> dict[str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for kind, raw, _ in _table_parts(tables):
        stem = folder / f"{tables.ablation}.{kind}"
        if "md" in formats:
            written.setdefault("md", []).append(_write(Path(f"{stem}.md"), rendered[(kind, "md")]))
        if "latex" in formats:
            written.setdefault("latex", []).append(_write(Path(f"{stem}.tex"), rendered[(kind, "latex")]))
        if "csv" in formats:
            written.setdefault("csv", []).append(
                _write(Path(f"{stem}.csv"), to_csv(raw.drop(columns=["source"], errors="ignore")))
            )
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _legend(tables: EntryTables, kind: str) -> str:
    gain = f" {GAIN_LEGEND}" if tables.gain is not None else ""
    if kind == "runs":
        return ("Every run at its best-grader validation step (grader, IoU and SI-logRMSE all at that step); "
                f"winner = the runs of the winning variant.{gain}")
    return (f"Mean and standard deviation over finished seeds; within noise: {NOISE_RULES[tables.noise_rule]}."
            f"{gain}")


GAIN_LEGEND = ("Δm: the multi-task gain over the single-task baselines of the same architecture, profile and seed, "
               "100/2 x [(IoU - IoU_st) / IoU_st - (SI-logRMSE - SI-logRMSE_st) / SI-logRMSE_st], in percent "
               "(Vandenhende et al. 2021); Δm std: its standard deviation over seeds.")


def markdown_table(tables: EntryTables, kind: str, shown: pd.DataFrame) -> str:
    text = to_markdown(shown) + "\n" + _legend(tables, kind) + "\n"
    if kind == "runs":
        text += "".join(f"\n- {line}" for line in notes(tables)) + ("\n" if notes(tables) else "")
    return text


def latex_table(tables: EntryTables, kind: str, shown: pd.DataFrame, caption: str, label: str) -> str:
    tabular = to_latex(shown)
    legend = latex_escape(_legend(tables, kind))
    lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{latex_escape(caption)} ({kind}). {legend}}}",
             rf"\label{{{label}}}",
             # Shrink wide tables to the text width, never enlarge narrow ones.
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%", tabular.rstrip("\n") + "%", "}"]
    if kind == "runs" and notes(tables):
        lines += [r"\par\smallskip\footnotesize", r"\begin{itemize}"]
        lines += [rf"\item {latex_escape(line)}" for line in notes(tables)]
        lines += [r"\end{itemize}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


@dataclass
class FigureJob:
    """One figure of one entry: what a renderer of :data:`FIGURE_RENDERERS` draws from, and where to."""

    report: EntryReport
    tables: EntryTables  # the report's tables: an entry with no runs has none, and no figures
    subset: ResultTables
    folder: Path
    stem: str
    title: str
    dataset_root: Path | None


def _draw_figures(report: EntryReport, tables: EntryTables, subset: ResultTables, folder: Path,
                  dataset_root: Path | None) -> None:
    # Imported here: matplotlib and the dataset readers (torch) are not needed for tables alone.
    from report import figures as fig

    entry = report.entry
    for kind in entry.report.figures:
        job = FigureJob(report, tables, subset, folder, f"{entry.id}.{kind}", f"{entry.item} {entry.id}",
                        dataset_root)
        try:
            report.figures[kind] = FIGURE_RENDERERS[kind](fig, job)
        except (fig.FigureError, OSError, ValueError) as exc:
            report.problems.append(f"figure {kind} not drawn: {exc}")


def _curves(fig: Any, job: FigureJob) -> list[Path]:
    return fig.curves(job.subset.points, job.tables.runs, job.folder, job.stem, job.title)


def _bars(fig: Any, job: FigureJob) -> list[Path]:
    return fig.bars(job.tables.summary, job.folder, job.stem, job.title)


def _image_runs_and_root(fig: Any, job: FigureJob) -> tuple[list[tuple[str, Path]], Path]:
    """The runs the image figures show and the dataset folder their test images come from."""
    chosen = image_runs(job.tables, job.subset.runs)
    if not chosen:
        raise fig.FigureError("no finished run with test predictions")
    runs = job.subset.runs
    root = job.dataset_root or dataset_root_of(runs[runs["source"] == str(chosen[0][1])].iloc[0])
    if not root.is_dir():
        raise fig.FigureError(f"dataset folder {root} does not exist (pass --dataset-root)")
    return chosen, root


def _qualitative(fig: Any, job: FigureJob) -> list[Path]:
    chosen, root = _image_runs_and_root(fig, job)
    common = set.intersection(*(set(fig.predicted_indices(d)) for _, d in chosen))
    indices = sorted(common)[:QUALITATIVE_IMAGES]
    if not indices:
        raise fig.FigureError("the chosen runs share no predicted test image")
    return fig.qualitative(chosen, root, indices, job.folder, job.stem, job.title)


def _depth_histogram(fig: Any, job: FigureJob) -> list[Path]:
    chosen, root = _image_runs_and_root(fig, job)
    return fig.depth_histogram(chosen, root, job.folder, job.stem, job.title)


# How each figure kind of the entry format (FIGURE_KINDS: name -> caption) is drawn; a test keeps both in step.
FIGURE_RENDERERS = {"curves": _curves, "bars": _bars, "qualitative": _qualitative, "depth_histogram": _depth_histogram}


# ---------------------------------------------------------------------------------------- documents
def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_config_value(v, float_format='g')}" for k, v in values.items()) or "(none)"


def _winner_line(tables: EntryTables) -> str:
    if tables.winner is None and tables.rank_metric == GRADER_KEY and \
            set(single_task_variants(tables.runs)) == set(tables.summary["variant"]):
        return ("No winner: every run here trains one task, for which the grader is not defined; rank such an "
                "entry by its task's metric (rank_by: val/iou, or val/si_logrmse with mode min).")
    if tables.winner is None:
        return "No winner yet: no finished run has a finite score."
    rows = tables.summary[tables.summary["variant"] == tables.winner]
    if rows.empty or not math.isfinite(rows.iloc[0]["grader"]):
        return f"Winner: {tables.winner} (its finished runs are shown above)."
    row = rows.iloc[0]
    metric = tables.delta_label
    score = row["grader"] if metric == "grader" else row["score"]
    seeds = f" (mean of {int(row['finished'])} finished seeds)" if row["finished"] > 1 else ""
    line = f"Winner: {tables.winner} with {metric} {score:.2f}{seeds} ({tables.winner_rule})."
    if tables.variants is not None and tables.decision is None:
        close = [str(v) for v, n in zip(tables.summary["variant"], tables.summary["within_noise"]) if n == "yes"]
        if close:
            line += f" Within seed noise of the winner ({NOISE_RULES[tables.noise_rule]}): {', '.join(close)}."
    return line


def evidence_lines(tables: EntryTables, selection: Any = None) -> list[str]:
    """What the winner rests on: the decision and its test, what every IoU under 50 means for the grader,
    and the compute the entry took."""
    lines = [_winner_line(tables)]
    if tables.decision is not None:
        lines.append(f"Decision: {tables.decision.describe()}.")
    elif selection is not None and selection.racing is not None:
        lines.append("Decision: the race is not over; `mtl-ablate run` goes on where the records stand.")
    lines += multitask_lines(tables)
    finished = tables.runs[tables.runs[STATE_COLUMN] == RunState.FINISHED]
    if not finished.empty and (finished["iou"].dropna() < 50).all():
        lines.append("Every IoU here is under 50, so the grader is max(50 - SI-logRMSE, 0): it measures depth "
                     "alone.")
    if selection is not None and selection.spent is not None:
        used, full = selection.spent, selection.full_grid_steps
        share = f", {100 * used.steps / full:.0f}% of the {full} its full grid would take" if full else ""
        raced = " (raced)" if selection.racing is not None else ""
        lines.append(f"Compute{raced}: {used.steps} optimizer steps{share}; {used.device_hours:.2f} device-hours "
                     f"over {used.runs} runs.")
    return lines


def multitask_lines(tables: EntryTables) -> list[str]:
    """What the single-task runs are, and the multi-task gain Delta_m with its seed noise."""
    lines = []
    single = single_task_variants(tables.runs)
    if single and tables.rank_metric == GRADER_KEY:
        lines.append(f"Single-task variants ({', '.join(single)}): the grader is not defined for one task, so they "
                     "are not ranked; each run is shown at the best point of its own metric (IoU highest, "
                     "SI-logRMSE lowest).")
    if tables.gain is not None:
        gain = tables.gain
        lines.append(f"Δm over the single-task baselines of {gain.baselines} (mean ± standard deviation over "
                     f"seeds): {gain.describe()}.")
        lines += [f"{note}." for note in gain.notes]
    return lines


def _setup_lines(report: EntryReport) -> list[str]:
    entry, setup = report.entry, report.setup
    profile = f"; profile: {report.selection.profile}" if report.selection is not None else ""
    seeds = entry.seeds
    if report.selection is not None and report.selection.racing is not None:
        seeds = report.selection.racing.seed_order(entry.seeds)
    raced = " (raced: a variant gets the first of them, more where they can change the answer)" \
        if report.selection is not None and report.selection.racing is not None else ""
    lines = [f"Base: {entry.base_kind}{profile}; seeds: {', '.join(str(s) for s in seeds)}{raced}.",
             f"Fixed overrides of this entry: {_pairs(dict(entry.overrides))}."]
    if setup:
        for variant, values in setup["varied"].items():
            lines.append(f"Variant {variant}: {_pairs(values)}.")
        lines.append(f"Shared by every run, differing from the template defaults: {_pairs(setup['common'])}.")
    if report.selection is not None and report.selection.base_note:
        lines.append(f"Base on this machine: {report.selection.base_note}.")
    if report.selection is not None and report.selection.stale_note:
        lines.append(report.selection.stale_note[0].upper() + report.selection.stale_note[1:] + ".")
    if report.tables is not None and (report.tables.runs[STATE_COLUMN] == RunState.SKIPPED).any():
        skipped = report.tables.runs[report.tables.runs[STATE_COLUMN] == RunState.SKIPPED]["variant"]
        lines.append(f"Skipped on this machine (cannot run here, see each run's note): {', '.join(map(str, skipped))}; "
                     "the winner is chosen among the variants that ran.")
    return lines


def render_markdown(sections: Sequence[EntryReport], out_dir: Path, runs_label: str) -> str:
    parts = ["# Multi-task ablations: write-up", "",
             f"Generated by `mtl-ablate report` from the run records in `{runs_label}`. Every number is taken at "
             "the run's best-grader validation step (grader, IoU and SI-logRMSE at that same step).", ""]
    for section in sections:
        entry = section.entry
        parts += [f"## {entry.item} {entry.id}", "", f"**Question.** {entry.question.strip()}", ""]
        parts += ["**Setup.**", ""] + [f"- {line}" for line in _setup_lines(section)] + [""]
        if section.tables is not None:
            for kind, _, _ in _table_parts(section.tables):
                parts += [section.rendered[(kind, "md")].rstrip("\n"), ""]
            parts += [line + "\n" for line in evidence_lines(section.tables, section.selection)]
        for kind, paths in section.figures.items():
            png = next(p for p in paths if p.suffix == ".png")
            parts += [f"![{FIGURE_KINDS[kind]}]({png.relative_to(out_dir).as_posix()})", "",
                      f"*{FIGURE_KINDS[kind]}.*", ""]
        for problem in section.problems:
            parts += [f"> **Missing:** {problem}", ""]
        parts += [f"<!-- CONCLUSION({entry.id}): answer the question from the table and figures above. -->",
                  "**Conclusion.** _TODO_", ""]
    return "\n".join(parts)


LATEX_PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[T1]{fontenc}
\usepackage[utf8]{inputenc}
\usepackage[margin=2cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\title{Multi-task ablations: write-up}
\date{}
\begin{document}
\maketitle
"""


def render_latex(sections: Sequence[EntryReport], out_dir: Path, runs_label: str) -> str:
    parts = [LATEX_PREAMBLE.rstrip("\n"),
             latex_escape(f"Generated by mtl-ablate report from the run records in {runs_label}. Every number is "
                          "taken at the run's best-grader validation step (grader, IoU and SI-logRMSE at that same "
                          "step)."), ""]
    for section in sections:
        entry = section.entry
        parts += [rf"\section{{{latex_escape(entry.item)}: {latex_escape(entry.id)}}}",
                  rf"\paragraph{{Question.}} {latex_escape(entry.question.strip())}", "",
                  r"\paragraph{Setup.}", r"\begin{itemize}"]
        parts += [rf"\item {latex_escape(line)}" for line in _setup_lines(section)] + [r"\end{itemize}", ""]
        if section.tables is not None:
            for kind, _, _ in _table_parts(section.tables):
                parts += [section.rendered[(kind, "latex")].rstrip("\n"), ""]
            parts += [latex_escape(line) + "\n" for line in evidence_lines(section.tables, section.selection)]
        for kind, paths in section.figures.items():
            pdf = next(p for p in paths if p.suffix == ".pdf")
            parts += [r"\begin{figure}[htbp]", r"\centering",
                      rf"\includegraphics[width=\linewidth]{{{pdf.relative_to(out_dir).as_posix()}}}",
                      rf"\caption{{{latex_escape(entry.id)}: {latex_escape(FIGURE_KINDS[kind])}.}}",
                      rf"\label{{fig:{entry.id}.{kind}}}", r"\end{figure}", ""]
        for problem in section.problems:
            parts += [rf"\noindent\textbf{{Missing:}} {latex_escape(problem)}", ""]
        parts += [f"% TODO(conclusion): {entry.id} -- answer the question from the table and figures above.",
                  r"\paragraph{Conclusion.} \emph{TODO}", ""]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------- everything
def write_report(entries: Iterable[Any], results: ResultTables, out_dir: str | Path,
                 formats: Sequence[str] = FORMATS, draw_figures: bool = True, dataset_root: Path | None = None,
                 noise_rule: str = "paired", runs_label: str = "runs", runs_dir: Path | None = None,
                 selections: dict[str, Any] | None = None) -> ReportResult:
    """Tables, figures and the write-up (``report.md`` / ``report.tex`` per ``formats``) of ``entries``,
    which are written in their assignment order (``Entry.sort_key``)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ReportError(f"unknown format(s) {unknown}; expected some of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(entries, key=lambda e: e.sort_key)
    sections = []
    for entry in ordered:
        try:
            selection = (selections or {}).get(entry.id)
            sections.append(build_entry_report(entry, results, out_dir, formats, draw_figures, dataset_root,
                                               noise_rule, runs_dir, selection))
        except TableError as exc:
            raise ReportError(f"entry {entry.id}: {exc}") from None
    files = [p for s in sections for group in (*s.table_files.values(), *s.figures.values()) for p in group]
    if "md" in formats:
        files.append(_write(out_dir / "report.md", render_markdown(sections, out_dir, runs_label)))
    if "latex" in formats:
        files.append(_write(out_dir / "report.tex", render_latex(sections, out_dir, runs_label)))
    return ReportResult(out_dir=out_dir, sections=sections, files=files)

