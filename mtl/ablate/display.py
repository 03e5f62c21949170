"""What ``mtl-ablate`` shows: a live table of the runs while they train, and the best-grader results table.

Progress is read from each run's status (written atomically by ``mtl-train``), never from its
console output. On a terminal the table updates in place; otherwise one plain line is printed whenever
a run changes state or finishes an epoch, so logs stay readable.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mtl.config import format_config_value
from mtl.run.best import run_rank_metric
from mtl.run.errors import RecordError
from mtl.run.layout import log_path
from mtl.run.model import HEADLINE_LABELS, STATE_COLUMN, Progress, RunState, Status, ValidationPoint
from mtl.run.records import read_record, read_status, stall_of

from .planner import RunSpec

STALLED = "stalled"  # the live table's state of a trainer that records no progress (mtl.run.records.stall_of)


def make_console() -> Console:
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=200)  # files and pipes: do not wrap table rows at 80 columns (unless $COLUMNS says)
    return console


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_number(value: Any, digits: int = 2) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "-"


def best_text(spec: RunSpec, best: Optional[ValidationPoint]) -> str:
    """A run's best point by the metric it is ranked by: "grader 9.50", or a single-task run's own metric
    ("IoU 14.94", "SI-logRMSE 44.16": its grader is not defined); "-" before its first validation."""
    if best is None:
        return "-"
    metric, _ = run_rank_metric(spec.config.tasks)
    return f"{HEADLINE_LABELS[metric]} {format_number(getattr(best, metric.removeprefix('val/')))}"


def format_params(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={format_config_value(value)}" for key, value in values.items())


def run_label(spec: RunSpec) -> str:
    return f"{spec.entry_id} {spec.variant} s{spec.seed}"


def _status_of(run_dir: Path) -> Optional[Status]:
    """The run's status for the live table; None when absent or damaged (the results table names damage)."""
    try:
        return read_status(run_dir)
    except RecordError:
        return None


@dataclass
class _Row:
    """What the live table knows of one run."""

    spec: RunSpec
    log: str
    state: str = "queued"  # queued, starting, running, then the outcome
    where: str = ""
    status: Optional[Status] = None
    message: str = ""
    seen: Optional[tuple[int, float]] = None  # (epoch, progress time) last said in a plain line
    said: float = 0.0
    resume_said: bool = False
    stall: Optional[str] = None  # why its trainer counts as stalled, while it does

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", STALLED)

    @property
    def progress(self) -> Optional[Progress]:
        """The trainer's latest progress record while it runs (step, loss, lr, it/s, ETA; every few seconds)."""
        return self.status.progress if self.status is not None and self.state == "running" else None


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read and paste)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Monitor:
    """Follows the runs of one ``mtl-ablate run`` call: per run its step, loss, it/s and ETA (from the
    progress record the trainer keeps in its status) and its log file; per entry an ETA."""

    PLAIN_LINE_INTERVAL_S = 30.0  # off a terminal: a progress line per run at most this often

    def __init__(self, console: Console, live: Optional[bool] = None):
        self.console = console
        self.live_mode = console.is_terminal if live is None else live
        self.rows: dict[Path, _Row] = {}
        self.slots = 1
        self._live: Optional[Live] = None

    # -------------------------------------------------------------------------------------- events
    def begin(self, specs: list[RunSpec], slots: int = 1) -> None:
        self.slots = max(1, min(slots, len(specs)))
        for spec in specs:
            self.rows[spec.run_dir] = _Row(spec=spec, log=_shown_path(log_path(spec.run_dir)))
        if self.live_mode:
            self._live = Live(console=self.console, refresh_per_second=2, get_renderable=self.table)
            self._live.start()

    def started(self, spec: RunSpec, placement: Any, job: Any) -> None:
        row = self.rows[spec.run_dir]
        row.state, row.where = "starting", placement.describe()
        self._say(f"{run_label(spec)}: started on {row.where} -> {spec.run_dir} (log: {row.log})")

    def settled(self, outcome: Any) -> None:
        row = self.rows[outcome.spec.run_dir]
        row.state, row.message = str(outcome.state), outcome.message
        row.status = _status_of(outcome.spec.run_dir)
        self._say_resumed(row)  # a short run can end between two refreshes
        best = row.status.best if row.status else None
        text = f"{run_label(outcome.spec)}: {outcome.state}"
        if best is not None:
            text += f" (best {best_text(outcome.spec, best)} at epoch {best.epoch})"
        if outcome.message:
            text += f" - {outcome.message}"
        self._say(text)

    def refresh(self) -> None:
        active = [row for row in self.rows.values() if row.active]
        for row in active:  # every status first: the entry ETAs below use all of them
            row.status = _status_of(row.spec.run_dir)
            if row.status is not None and row.status.state is RunState.RUNNING and row.status.pid:
                row.state = "running"
                self._check_stall(row, row.status)
        for row in active:
            self._say_resumed(row)
            progress = row.progress
            if progress is None or row.status is None or row.status.state is not RunState.RUNNING:
                continue  # nothing trained yet in this attempt: no "epoch 0, ETA -" line
            seen = (row.status.epoch, progress.at)
            due = time.monotonic() - row.said >= self.PLAIN_LINE_INTERVAL_S or row.seen is None \
                or seen[0] != row.seen[0]
            if seen != row.seen and due:
                row.seen, row.said = seen, time.monotonic()
                self._say(
                    f"{run_label(row.spec)}: epoch {progress.epoch}/{row.status.num_epochs or '?'}, "
                    f"step {progress.step}/{progress.total_steps}, loss {format_number(progress.loss, 4)}, "
                    f"{format_number(progress.it_s)} it/s, ETA {format_duration(progress.eta_s)} "
                    f"(entry {format_duration(self.entry_eta(row.spec.entry_id))})"
                )

    def _check_stall(self, row: _Row, status: Status) -> None:
        """Mark a trainer that makes no progress as stalled, saying so once (and once when it goes on)."""
        stall = stall_of(row.spec.run_dir, status)
        if stall and row.stall is None:
            self.note(f"{run_label(row.spec)}: stalled: {stall}")
        elif stall is None and row.stall is not None:
            self.note(f"{run_label(row.spec)}: progressing again")
        row.stall = stall
        if stall:
            row.state = STALLED

    def _say_resumed(self, row: _Row) -> None:
        """Once per run: where the trainer resumed from, when this attempt resumed (the trainer records
        the step with its pid)."""
        status = row.status
        resumed = status.resumed if status else None
        if row.resume_said or status is None or resumed is None or resumed.pid != status.pid:
            return
        row.resume_said = True
        self.note(f"{run_label(row.spec)}: resuming from step {resumed.step} "
                  f"(epoch {resumed.epoch}/{status.num_epochs or '?'})")

    def end(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def note(self, text: str) -> None:
        """A line about the run as a whole (waiting for another process), also above the live table."""
        if self.live_mode:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._say(text)

    # -------------------------------------------------------------------------------------- estimates
    def entry_eta(self, entry_id: str) -> Optional[float]:
        """Seconds until the entry's runs are done: the running runs' ETAs plus, for each queued run, the
        duration the running ones suggest, shared over the device slots. None while nothing suggests it."""
        rows = [row for row in self.rows.values() if row.spec.entry_id == entry_id]
        active = [row for row in rows if row.active]
        queued = sum(1 for row in rows if row.state == "queued")
        if not active and not queued:
            return 0.0
        running = [row.status.progress if row.status else None for row in active]
        durations = [p.total_steps / p.it_s for p in running if p is not None and p.it_s and p.total_steps]
        etas = [p.eta_s if p is not None else None for p in running]
        if any(eta is None for eta in etas) or (queued and not durations):
            return None
        per_run = sum(durations) / len(durations) if durations else 0.0
        return (sum(eta for eta in etas if eta is not None) + queued * per_run) / self.slots

    # -------------------------------------------------------------------------------------- output
    def _say(self, text: str) -> None:
        if not self.live_mode:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False, soft_wrap=True)

    def table(self) -> Table:
        entries = dict.fromkeys(row.spec.entry_id for row in self.rows.values())
        caption = "; ".join(f"{entry_id}: ETA {format_duration(self.entry_eta(entry_id))}" for entry_id in entries)
        table = Table(title="mtl-ablate run", caption=caption, expand=False)
        numeric = ("seed", "epoch", "step", "loss", "it/s", "ETA", "best")
        for column in ("entry", "variant", "seed", STATE_COLUMN, "epoch", "step", "loss", "it/s", "ETA", "best",
                       "where", "log"):
            table.add_column(column, justify="right" if column in numeric else "left",
                             overflow="fold" if column == "log" else "ellipsis")
        for row in self.rows.values():
            spec, status, progress = row.spec, row.status, row.progress
            best = status.best if status else None
            epoch = f"{status.epoch}/{status.num_epochs or spec.config.num_epochs}" if status else "-"
            table.add_row(
                spec.entry_id, spec.variant, str(spec.seed), row.state, epoch,
                f"{progress.step}/{progress.total_steps}" if progress else "-",
                format_number(progress.loss if progress else None, 4),
                format_number(progress.it_s if progress else None),
                format_duration(progress.eta_s) if progress else "-", best_text(spec, best),
                row.where, row.log,
            )
        return table


def results_table(specs: list[RunSpec], title: str = "best-grader validation point of each run") -> Table:
    """One row per run at its best-grader validation point (all metrics at that point)."""
    table = Table(title=title)
    entries = {spec.entry_id for spec in specs}
    if len(entries) > 1:
        table.add_column("entry")
    columns = ("variant", "seed", "varied parameters", "grader", "IoU", "SI-logRMSE", "step", "epoch", STATE_COLUMN)
    for column in columns:
        numeric = column in ("seed", "grader", "IoU", "SI-logRMSE", "step", "epoch")
        table.add_column(column, justify="right" if numeric else "left")
    for spec in specs:
        try:
            record = read_record(spec.run_dir)
        except RecordError as exc:  # named in the state column: a damaged record has no result to show
            table.add_row(*([spec.entry_id] if len(entries) > 1 else []), spec.variant, str(spec.seed),
                          format_params(spec.varied), "-", "-", "-", "-", "-", f"damaged: {exc}")
            continue
        best = record.best() or {}
        cells = [
            spec.variant,
            str(spec.seed),
            format_params(spec.varied),
            format_number(best.get("val/grader")),
            format_number(best.get("val/iou")),
            format_number(best.get("val/si_logrmse")),
            str(best.get("step", "-")),
            str(best.get("epoch", "-")),
            str(record.state),
        ]
        table.add_row(*([spec.entry_id] if len(entries) > 1 else []), *cells)
    return table
