"""W&B workspaces built from ablation entries (the ``wandb-workspaces`` package).

One workspace per entry: its runs grouped by variant, the question as text, the validation metrics and the
losses against the optimizer step, and a parallel-coordinates panel from the keys the entry varies to the
best grader. :func:`dashboard_spec` only builds the specification (no network); :func:`save_dashboard`
sends it to the W&B server, into the entry's own view, which a later save updates.

Its runs are those every reader sees (mtl.ablate.selection, as ``report --wandb``): the W&B run each
selected run directory records in its status (the one that carries its history: the directory's own, or an
agent's that carried it on), named by id, so runs of another profile or an older config stay out and a run
reused from another entry is in. A variant is the values of the keys the entry varies (a reused run's W&B
job type is the other entry's variant name); an entry that varies nothing groups by job type.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Sequence

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
import wandb_workspaces.workspaces.internal as wsi
from wandb_workspaces import expr

from mtl.train.tracking import BEST_GRADER_SUMMARY as TRACKED_BEST_GRADER
from report.wandb_store import WANDB_STEP_KEY

VALIDATION_METRICS = ["val/grader", "val/iou", "val/si_logrmse"]
# Panel title -> the curves it draws (training and validation side by side).
LOSS_PANELS = {
    "loss": ["train/loss", "val/loss"],
    "segmentation loss": ["train/loss_semseg", "val/loss_semseg"],
    "depth loss": ["train/loss_depth", "val/loss_depth"],
}
# The best point's grader, a scalar of the run summary: the metric the entry's sweep names too.
BEST_GRADER_SUMMARY = TRACKED_BEST_GRADER
# Seeds of a variant drawn as their mean with a band of one standard deviation.
GROUP_AGGREGATE: Final = "mean"
GROUP_RANGE: Final = "stddev"


def varied_keys(entry: Any) -> list[str]:
    """The config keys an entry varies: its grid keys, else every key its variants override (in order
    of first appearance); none for an entry of one configuration."""
    if entry.grid is not None:
        return list(entry.grid)
    keys: dict[str, None] = {}
    for variant in entry.variants or []:
        keys.update(dict.fromkeys(variant.overrides))
    return list(keys)


def dashboard_spec(entry: Any, entity: str, project: str, run_ids: Sequence[str] | None = None) -> ws.Workspace:
    """The workspace of one entry (an :class:`mtl.ablate.entry.Entry`) in ``entity/project``: the W&B runs
    ``run_ids`` (the entry's selection, see :func:`selected_run_ids`), or without them every run of the
    entry's W&B group.

    ``entity`` may be empty for a preview; saving needs it."""
    def curves(title: str, metrics: Sequence[str]) -> wr.LinePlot:
        return wr.LinePlot(title=title, x=WANDB_STEP_KEY, y=list(metrics), title_x="optimizer step",
                           groupby_aggfunc=GROUP_AGGREGATE, groupby_rangefunc=GROUP_RANGE)

    sections = [
        ws.Section(name="Question", is_open=True, panels=[
            wr.MarkdownPanel(markdown=f"**{entry.item}: {entry.id}**\n\n{entry.question.strip()}")]),
        ws.Section(name="Validation", is_open=True, panels=[curves(m, [m]) for m in VALIDATION_METRICS]),
        ws.Section(name="Losses", is_open=True, panels=[curves(t, m) for t, m in LOSS_PANELS.items()]),
    ]
    keys = varied_keys(entry)
    if keys:
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in keys]
        columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(BEST_GRADER_SUMMARY),
                                                        display_name="best val/grader"))
        sections.append(ws.Section(name="Varied keys", is_open=True, panels=[
            wr.ParallelCoordinatesPlot(title=f"{', '.join(keys)} -> best grader", columns=columns)]))
    runs = expr.Metric("ID").isin(list(run_ids)) if run_ids is not None else expr.Metric("Group") == entry.id
    groupby: list[Any] = [expr.Config(k) for k in keys] if keys else [expr.Metric("JobType")]
    return ws.Workspace(
        entity=entity, project=project, name=entry.id, sections=sections,
        settings=ws.WorkspaceSettings(x_axis=WANDB_STEP_KEY),
        runset_settings=ws.RunsetSettings(filters=expr.And(runs), groupby=groupby),
    )


def selected_run_ids(selection: Any) -> tuple[list[str], list[str]]:
    """(W&B run ids, names of the runs without one) of a :class:`mtl.ablate.selection.Selection`: each run
    directory's recorded W&B run; runs never started, or never mirrored to W&B, have none."""
    from mtl.run.records import read_status

    ids, without = [], []
    for run in selection.runs:
        try:
            status = read_status(run.run_dir)
        except ValueError:
            status = None
        if status is not None and status.wandb_run_id:
            ids.append(status.wandb_run_id)
        elif status is not None:
            without.append(run.run_dir.name)
    return list(dict.fromkeys(ids)), without


def describe(workspace: ws.Workspace) -> str:
    """The specification as text: where it goes, which runs, how grouped, and every panel."""
    entity = workspace.entity or "(your default entity)"
    grouping = ", ".join(g.name for g in workspace.runset_settings.groupby)
    lines = [f"workspace {workspace.name!r} in {entity}/{workspace.project}",
             f"  runs: {workspace.runset_settings.filters}; grouped by {grouping}; x axis {workspace.settings.x_axis}"]
    for section in workspace.sections:
        lines.append(f"  section {section.name}:")
        for panel in section.panels:
            lines.append(f"    {_panel_line(panel)}")
    return "\n".join(lines)


def _panel_line(panel: Any) -> str:
    if isinstance(panel, wr.MarkdownPanel):
        first = panel.markdown.splitlines()[0] if panel.markdown else ""
        return f"text: {first}"
    if isinstance(panel, wr.LinePlot):
        return f"line plot {panel.title!r}: {', '.join(map(str, panel.y))} against {panel.x}"
    if isinstance(panel, wr.ParallelCoordinatesPlot):
        return "parallel coordinates: " + " | ".join(_column_name(c.metric) for c in panel.columns)
    return type(panel).__name__


def _column_name(metric: Any) -> str:
    if isinstance(metric, wr.Config):
        return f"config {metric.name}"
    if isinstance(metric, wr.SummaryMetric):
        return f"summary {metric.name}"
    return str(metric)


def view_name(entity: str, project: str, entry_id: str) -> str:
    """The entry's view in ``entity/project``, the same for every save (wandb-workspaces' own names are
    ``nw-<11 characters of [a-z0-9]>-v``, a new one for each new workspace)."""
    digest = hashlib.sha256(f"{entity}/{project}/{entry_id}".encode()).hexdigest()[:11]
    return wsi._url_query_str_to_internal_name(digest)


def save_dashboard(workspace: ws.Workspace) -> str:
    """Save the workspace into the entry's view (credentials needed): created on the first save, updated on
    every later one (Workspace.save updates the view whose id it holds); returns its URL."""
    name = view_name(workspace.entity, workspace.project, workspace.name)
    workspace._internal_name = name
    try:
        existing = wsi.get_view_dict(workspace.entity, workspace.project, wsi._internal_name_to_url_query_str(name))
    except ValueError as exc:
        if not str(exc).startswith("Workspace"):  # not "Workspace ... not found": the project is missing
            raise
    else:
        workspace._internal_id = existing["id"]
    return workspace.save().url
