"""Result stores: run records as one pandas table, whether they come from run directories or from W&B
(:mod:`report.wandb_store`).

Both stores build their tables with the same function (:func:`build_tables`), so the same runs give
the same frames:

``runs``   one row per run: ``ablation, run, variant, seed, state, grader, iou, si_logrmse, step,
           epoch, params, gflops, note, source, url`` followed by every config key (one column each);
           ``url`` is the run's W&B page, or empty when the run was not logged online.
           The metric columns hold the best validation point (:func:`mtl.run.best.best_point`: the highest
           grader, ties to the higher IoU - SI-logRMSE, then the earlier step); a run that never validated
           has NaN there and a note.
``points`` one row per validation point of every run: ``ablation, run, variant, seed, step, epoch``
           and every ``val/`` metric without its prefix (``grader``, ``iou``, ``si_logrmse``,
           ``loss``, ``iou_class/road``, ...). Non-finite values are NaN.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import pandas as pd

from mtl.run import best as best_rule
from mtl.run import records, trace
from mtl.run import summary as summary_file
from mtl.run.best import TIE_BREAK, best_point, is_finite_number, run_rank_metric, tie_break_value
from mtl.run.layout import RunDirectory, find_run_dirs, parse_run_name
from mtl.run.model import GRADER_KEY, STATE_COLUMN, RunState, Status
from report.run_files import StoreError, read_current_summary, read_run_for_report, read_validation_points

VAL_PREFIX = "val/"
IDENTITY_COLUMNS = ["ablation", "run", "variant", "seed", STATE_COLUMN]
BEST_COLUMNS = ["grader", "iou", "si_logrmse", "step", "epoch"]
MODEL_COLUMNS = ["params", "gflops"]
RUN_COLUMNS = IDENTITY_COLUMNS + BEST_COLUMNS + MODEL_COLUMNS + ["note", "source", "url"]


@dataclass
class RunInput:
    """What a store knows about one run before the shared table building."""

    ablation: str
    run: str
    variant: str
    seed: Any
    state: str  # a RunState value
    config: dict[str, Any]
    points: list[dict[str, Any]]  # validation points: step, epoch and val/ keys
    params: float | None  # the model's size, when known
    gflops: float | None
    source: str  # run directory or W&B path, so a reader can find the run again
    url: str | None = None  # the run's W&B page, when the run was logged online
    best: dict[str, Any] | None = None  # the best point when already known (a summary file's), else ranked here
    remark: str = ""  # what its state means for the tables (a race pruned it, paused it at a rung)


class ResultTables:
    """The runs frame, and the points frame -- given, or read on first use (a local store reads the
    traces only when a figure or a rank metric asks for points, and then only those of one ablation)."""

    def __init__(self, runs: pd.DataFrame, points: pd.DataFrame | Callable[[str | None], pd.DataFrame],
                 ablation: str | None = None):
        self.runs = runs
        self._points = points
        self._ablation = ablation  # what a lazy points frame is limited to

    @property
    def points(self) -> pd.DataFrame:
        if callable(self._points):
            self._points = self._points(self._ablation)
        return self._points

    def for_ablation(self, ablation: str) -> ResultTables:
        runs = self.runs[self.runs["ablation"] == ablation].reset_index(drop=True)
        if callable(self._points):
            return ResultTables(runs=runs, points=self._points, ablation=ablation)
        return ResultTables(runs=runs, points=self.points[self.points["ablation"] == ablation].reset_index(drop=True))


class ResultStore(Protocol):
    """Where results are read from (the run directories, W&B): the runs of ``ablations``, each entry's limited
    to its selection (the runs of its current plan) when ``selections`` has one."""

    def load(self, ablations: Iterable[str] | None = None, selections: dict[str, Any] | None = None) -> ResultTables:
        ...


# ---------------------------------------------------------------------------------------- values
def _number(value: Any) -> float:
    """A metric value as float; missing, non-numeric and non-finite values become NaN."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):  # W&B may hand back "NaN" / "Infinity"
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _cell(value: Any) -> Any:
    """Config values as hashable cells (YAML and W&B both give lists where the config has tuples)."""
    if isinstance(value, list):
        return tuple(_cell(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _cell(v)) for k, v in value.items()))
    return value


# ---------------------------------------------------------------------------------------- rows
def best_with_note(points: list[dict[str, Any]], state: str, known_best: dict[str, Any] | None = None,
                   tasks: Any = None) -> tuple[dict[str, Any] | None, str]:
    """The best-grader validation point (``known_best`` when the trainer's summary gives it; a single-task
    run's (``tasks``, its config's) by its task's metric) and a note on what was unusual (never validated,
    NaN, ties, no grader)."""
    key, mode = run_rank_metric(tasks)
    if key != GRADER_KEY:
        return _single_task_best(points, state, known_best, tasks, key, mode)
    notes = []
    graders = [_number(p.get(GRADER_KEY)) for p in points]
    non_finite = sum(1 for g in graders if not is_finite_number(g))
    best = known_best if known_best is not None else best_point(points, GRADER_KEY)
    if not points:
        notes.append(f"never validated (state {state})")
    elif best is None:
        notes.append(f"no finite grader in {len(points)} validation point(s)")
    elif non_finite:
        notes.append(f"{non_finite} validation point(s) with non-finite grader skipped")
    if best is not None:
        tied = [p for p, grader in zip(points, graders) if grader == best[GRADER_KEY]]
        if len(tied) > 1:
            steps = ", ".join(str(s) for s in sorted(p["step"] for p in tied))
            by_tie_break = sum(1 for p in tied if tie_break_value(p) == tie_break_value(best)) == 1
            notes.append(f"grader tie at steps {steps}: step {best.get('step')} kept by "
                         + (TIE_BREAK if by_tie_break else "the earlier step"))
    return best, "; ".join(notes)


def _single_task_best(points: list[dict[str, Any]], state: str, known_best: dict[str, Any] | None, tasks: str,
                      key: str, mode: str) -> tuple[dict[str, Any] | None, str]:
    """A single-task run's best point by its own metric, and the note that says the grader is not defined."""
    best = known_best if known_best is not None else best_point(points, key, mode)
    metric = "IoU" if key == "val/iou" else "SI-logRMSE"
    note = f"single-task run (tasks={tasks}): the grader is not defined; best point by {metric}"
    if not points:
        note = f"never validated (state {state}); {note}"
    elif best is None:
        note = f"no finite {metric} in {len(points)} validation point(s); {note}"
    return best, note


def run_row(run: RunInput) -> dict[str, Any]:
    best, note = best_with_note(run.points, run.state, run.best, run.config.get("tasks"))
    note = "; ".join(part for part in (run.remark, note) if part)
    row = {
        "ablation": run.ablation,
        "run": run.run,
        "variant": run.variant,
        "seed": run.seed,
        STATE_COLUMN: run.state,
        "grader": _number(best.get(GRADER_KEY)) if best else math.nan,
        "iou": _number(best.get("val/iou")) if best else math.nan,
        "si_logrmse": _number(best.get("val/si_logrmse")) if best else math.nan,
        "step": _number(best.get("step")) if best else math.nan,
        "epoch": _number(best.get("epoch")) if best else math.nan,
        "params": _number(run.params),
        "gflops": _number(run.gflops),
        "note": note,
        "source": run.source,
        "url": run.url or "",
    }
    for key, value in run.config.items():
        if key == "seed":
            continue  # already the identity column
        if key in row:
            raise StoreError(f"{run.source}: config key {key!r} collides with the report column of that name")
        row[key] = _cell(value)
    return row


@dataclass
class RunSummary:
    """What the tables need of one run: its row of the runs frame and its validation points as a
    float array (``values[i, j]`` = point i, key ``keys[j]``: step, epoch and the val/ metrics); ``values``
    is None while the points have not been read (a row from the run's summary file)."""

    row: dict[str, Any]
    keys: list[str]
    values: np.ndarray | None


def point_block(points: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """(keys, values) of validation points: step, epoch and the val/ keys present, as a float array."""
    present = set().union(*(p.keys() for p in points))
    keys = sorted((k for k in present if k in ("step", "epoch") or k.startswith(VAL_PREFIX)), key=_point_order)
    return keys, _run_block(points, keys)


def summarize(run: RunInput) -> RunSummary:
    keys, values = point_block(run.points)
    return RunSummary(row=run_row(run), keys=keys, values=values)


PointsReader = Callable[[RunSummary], tuple[list[str], np.ndarray]]


def build_tables(runs: Iterable[RunInput | RunSummary], read_points: PointsReader | None = None) -> ResultTables:
    """The runs and points frames (see the module docstring) of ``runs``, sorted by ablation and run.
    ``read_points`` reads the points of a summary that has none yet, when the points frame is first used."""
    summaries = [r if isinstance(r, RunSummary) else summarize(r) for r in runs]
    summaries.sort(key=lambda r: (r.row["ablation"], r.row["run"]))
    rows = [r.row for r in summaries]
    runs_frame = pd.DataFrame(rows, columns=_run_columns(rows))
    for column in ("step", "epoch", "params"):
        # Whole numbers stay whole when every run has one; NaN forces float otherwise.
        if runs_frame[column].notna().all() and len(runs_frame):
            runs_frame[column] = runs_frame[column].astype("int64")
    if all(s.values is not None for s in summaries):
        return ResultTables(runs=runs_frame, points=_points_frame(summaries))
    if read_points is None:
        raise ValueError("summaries without points need a read_points function")

    def points(ablation: str | None) -> pd.DataFrame:
        chosen = [s for s in summaries if ablation is None or s.row["ablation"] == ablation]
        for summary in chosen:
            if summary.values is None:
                summary.keys, summary.values = read_points(summary)
        return _points_frame(chosen)

    return ResultTables(runs=runs_frame, points=points)


def _run_columns(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(RUN_COLUMNS)
    seen = set(columns)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return columns


def _points_frame(summaries: list[RunSummary]) -> pd.DataFrame:
    # Built column by column from numpy arrays: 100,000 dicts through the DataFrame constructor is slow.
    all_keys = sorted(set().union(*(s.keys for s in summaries)) | {"step", "epoch"}, key=_point_order)
    counts = []
    for s in summaries:
        if s.values is None:
            raise ValueError(f"run {s.row['run']}: its points have not been read")
        counts.append(len(s.values))
    values = np.full((sum(counts), len(all_keys)), np.nan)
    position = {k: j for j, k in enumerate(all_keys)}
    offset = 0
    for summary, count in zip(summaries, counts):
        if count:
            values[offset:offset + count, [position[k] for k in summary.keys]] = summary.values
        offset += count

    def repeat(column: str) -> np.ndarray:
        return np.repeat(np.array([s.row[column] for s in summaries], dtype=object), counts)

    frame = pd.DataFrame({
        **{column: repeat(column) for column in ("ablation", "run", "variant", "seed")},
        **{_strip(k): values[:, j] for j, k in enumerate(all_keys)},
    })
    return frame.sort_values(["ablation", "run", "step"], kind="stable").reset_index(drop=True)


def _point_order(key: str) -> tuple[int, str]:
    # step and epoch, then the headline metrics, then the rest (losses, per-class IoU) alphabetically.
    headline = ["step", "epoch", GRADER_KEY, "val/iou", "val/si_logrmse"]
    return (headline.index(key), "") if key in headline else (len(headline), key)


def _run_block(points: list[dict[str, Any]], keys: list[str]) -> np.ndarray:
    """The ``keys`` of every point as a float array (missing and non-numeric values NaN)."""
    if not points or not keys:
        return np.empty((len(points), len(keys)))
    try:  # the common case: every point holds every key, as numbers or JSON NaN
        getter = operator.itemgetter(*keys)
        rows = [getter(p) for p in points]
        return np.array(rows, dtype=np.float64).reshape(len(points), len(keys))
    except (KeyError, TypeError, ValueError):
        return np.array([[_number(p.get(k)) for k in keys] for p in points], dtype=np.float64).reshape(
            len(points), len(keys)
        )


def _strip(key: str) -> str:
    return key[len(VAL_PREFIX):] if key.startswith(VAL_PREFIX) else key


# ---------------------------------------------------------------------------------------- local
class LocalStore:
    """Run directories under ``runs_dir`` (``<runs>/<ablation id>/<run name>/``).

    A run's row comes from its summary file (:mod:`mtl.run.summary`, written by the trainer) when that
    is current; its trace is read only when the points frame is used (curves, a rank metric other than
    the grader). Runs without a current summary are read from their trace. With ``cache_dir``, those
    runs' rows and points are kept there (:mod:`report.cache`) and a run is parsed again only when one of
    its files changed.
    """

    def __init__(self, runs_dir: str | Path, cache_dir: str | Path | None = None):
        self.runs_dir = Path(runs_dir)
        if cache_dir is not None:
            from report.cache import SummaryCache

            # A cached row depends on how rows are built (here), how the records are read and checked, and how
            # the best point is chosen.
            deciding = (__file__, best_rule.__file__, records.__file__, summary_file.__file__, trace.__file__)
            self.cache: Any = SummaryCache(cache_dir, code_files=deciding)
        else:
            self.cache = None

    def load(self, ablations: Iterable[str] | None = None, selections: dict[str, Any] | None = None) -> ResultTables:
        """The runs of ``ablations`` (every run folder below the root), or with ``selections`` (entry id ->
        :class:`mtl.ablate.selection.Selection`) exactly the run directories of each entry's current plan:
        another profile's or an older config's runs are not read, a run reused from another entry counts
        for each entry that uses it."""
        if not self.runs_dir.is_dir():
            raise StoreError(f"runs directory {self.runs_dir} does not exist")
        if selections is not None:
            return build_tables(self._selected(selections), read_points=_trace_points)
        wanted = set(ablations) if ablations is not None else None
        summaries = []
        try:
            run_dirs = list(find_run_dirs(self.runs_dir))
        except OSError as exc:
            raise StoreError(f"cannot list run directory root {self.runs_dir}: {exc}") from None
        for run_dir in run_dirs:
            if wanted is not None and not self._may_hold(run_dir, wanted):
                continue
            summary = self._summary(run_dir)
            if wanted is None or summary.row["ablation"] in wanted:
                summaries.append(summary)
        return build_tables(summaries, read_points=_trace_points)

    def _selected(self, selections: dict[str, Any]) -> list[RunSummary]:
        summaries = []
        for entry_id, selection in selections.items():
            for run in selection.runs:
                if not RunDirectory(run.run_dir).config_path.is_file():
                    continue  # planned, never started
                summary = self._summary(run.run_dir)
                row = {**summary.row, "ablation": entry_id, "variant": run.variant, "seed": run.seed}
                if run.reused_from:
                    same = f"same config as {run.reused_from}: its records"
                    row["note"] = f"{row['note']}; {same}" if row["note"] else same
                summaries.append(RunSummary(row=row, keys=summary.keys, values=summary.values))
        return summaries

    def _summary(self, run_dir: Path) -> RunSummary:
        from_file = summary_file_row(run_dir)
        if from_file is not None:
            return from_file
        if self.cache is None:
            return summarize(local_run_input(run_dir))
        from report.cache import signature

        sig = signature(run_dir)  # before reading: a file that changes meanwhile misses next time
        absolute = run_dir.absolute()
        cached = self.cache.load(absolute, sig)
        if cached is not None:
            row, keys, values = cached
            row = {k: _cell(v) for k, v in row.items()}  # JSON gave lists where the row had tuples
            row["source"] = str(run_dir)
            return RunSummary(row=row, keys=keys, values=values)
        summary = summarize(local_run_input(run_dir))
        self.cache.save(absolute, sig, summary.row, summary.keys, summary.values)
        return summary

    def _may_hold(self, run_dir: Path, wanted: set[str]) -> bool:
        # Skip reading runs whose folder says they belong elsewhere; the config decides for the rest.
        return run_dir.parent == self.runs_dir or run_dir.parent.name in wanted or run_dir == self.runs_dir


def summary_file_row(run_dir: Path) -> RunSummary | None:
    """The run's row from its summary file, points not read; None when it has no current summary."""
    found = read_current_summary(run_dir)
    if found is None:
        return None
    summary, status = found
    headlines = summary.validation
    points = [{"step": s, "epoch": e, GRADER_KEY: g, "val/iou": i, "val/si_logrmse": si} for s, e, g, i, si in
              zip(headlines.step, headlines.epoch, headlines.grader, headlines.iou, headlines.si_logrmse)]
    run = _run_input(run_dir, summary.config or {}, status, points)
    run.best = summary.best  # ranked by the trainer with the same rule when it wrote the summary
    return RunSummary(row=run_row(run), keys=[], values=None)


def _trace_points(summary: RunSummary) -> tuple[list[str], np.ndarray]:
    return point_block(read_validation_points(Path(summary.row["source"])))


def local_run_input(run_dir: Path) -> RunInput:
    """A run directory as a RunInput: ablation = the ``wandb_group`` key, else the parent folder name;
    variant = ``wandb_job_type``, else the ``<variant>-s<seed>-<hash>`` part of the folder name."""
    config, status, points = read_run_for_report(run_dir)
    return _run_input(run_dir, config, status, points)


def _run_input(run_dir: Path, config: dict[str, Any], status: Status | None,
               points: list[dict[str, Any]]) -> RunInput:
    name = parse_run_name(run_dir.name)
    variant = config.get("wandb_job_type") or (name.variant if name else run_dir.name)
    seed = config.get("seed", name.seed if name else None)
    model = status.model if status else None
    return RunInput(
        ablation=config.get("wandb_group") or run_dir.parent.name,
        run=run_dir.name,
        variant=variant,
        seed=seed,
        state=(status.state if status else RunState.NOT_STARTED).value,
        config=config,
        points=points,
        params=model.params if model else None,
        gflops=model.gflops if model else None,
        source=str(run_dir),
        url=_wandb_url(status, run_dir),
        remark=_remark(status),
    )


def _remark(status: Status | None) -> str:
    """A pruned or paused run's place in its race: where it stopped and why; never a winner."""
    if status is None:
        return ""
    if status.state is RunState.PRUNED:
        return f"pruned at step {status.step} (epoch {status.epoch}): {status.pruned or 'behind'}"
    if status.state is RunState.PAUSED:
        return f"paused at step {status.step} (epoch {status.epoch}), a racing rung"
    return ""


def _wandb_url(status: Status | None, run_dir: Path) -> str | None:
    url = status.wandb_url if status else None
    if url is None:
        return None
    if not url.startswith(("https://", "http://")):
        raise StoreError(f"{RunDirectory(run_dir).status_path}: wandb_url must be the run's http(s) URL, got {url!r}")
    return url
