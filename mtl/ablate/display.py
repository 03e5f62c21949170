"""What ``mtl-ablate`` shows: a live table of the runs while they train, and the best-grader results table.

Progress is read from each run's status (written atomically by ``mtl-train``), never from its
console output. On a terminal the table updates in place; otherwise one plain line is printed whenever
a run changes state or finishes an epoch, so logs stay readable.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mtl.config import format_config_value
from mtl.rundir import State, has_status, read_run, read_status

from .planner import RunSpec


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


def format_params(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={format_config_value(value)}" for key, value in values.items())


def run_label(spec: RunSpec) -> str:
    return f"{spec.entry_id} {spec.variant} s{spec.seed}"


class Monitor:
    """Follows the runs of one ``mtl-ablate run`` call."""

    def __init__(self, console: Console, live: Optional[bool] = None):
        self.console = console
        self.live_mode = console.is_terminal if live is None else live
        self.rows: dict[Path, dict[str, Any]] = {}
        self._live: Optional[Live] = None

    # -------------------------------------------------------------------------------------- events
    def begin(self, specs: list[RunSpec]) -> None:
        for spec in specs:
            self.rows[spec.run_dir] = {"spec": spec, "state": "queued", "where": "", "seen": None, "started": None}
        if self.live_mode:
            self._live = Live(console=self.console, refresh_per_second=2, get_renderable=self.table)
            self._live.start()

    def started(self, spec: RunSpec, placement: Any, job: Any) -> None:
        row = self.rows[spec.run_dir]
        row.update(state="starting", where=f"{placement.describe()}, {job.describe()}", started=time.time())
        self._say(f"{run_label(spec)}: started on {row['where']} -> {spec.run_dir}")

    def settled(self, outcome: Any) -> None:
        row = self.rows[outcome.spec.run_dir]
        row["state"] = outcome.state
        row["message"] = outcome.message
        status = read_status(outcome.spec.run_dir)
        row["status"] = status
        best = status.get("best") or {}
        text = f"{run_label(outcome.spec)}: {outcome.state}"
        if best:
            text += f" (best grader {format_number(best.get('grader'))} at epoch {best.get('epoch')})"
        if outcome.message:
            text += f" - {outcome.message}"
        self._say(text)

    def refresh(self) -> None:
        for run_dir, row in self.rows.items():
            if row["state"] not in ("starting", "running"):
                continue
            status = read_status(run_dir)
            row["status"] = status
            if status.get("state") == "running" and status.get("pid"):
                row["state"] = "running"
            seen = (status.get("state"), status.get("epoch"))
            if seen != row["seen"] and status.get("state") == "running":
                row["seen"] = seen
                best = status.get("best") or {}
                self._say(
                    f"{run_label(row['spec'])}: epoch {status.get('epoch', 0)}/{status.get('num_epochs', '?')}, "
                    f"best grader {format_number(best.get('grader'))}, ETA {format_duration(status.get('eta_s'))}"
                )

    def end(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -------------------------------------------------------------------------------------- output
    def _say(self, text: str) -> None:
        if not self.live_mode:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False, soft_wrap=True)

    def table(self) -> Table:
        table = Table(title="mtl-ablate run", expand=False)
        for column in ("entry", "variant", "seed", "state", "epoch", "best grader", "ETA", "where"):
            table.add_column(column, justify="right" if column in ("seed", "epoch", "best grader", "ETA") else "left")
        for row in self.rows.values():
            spec, status = row["spec"], row.get("status") or {}
            best = status.get("best") or {}
            epoch = f"{status.get('epoch', 0)}/{status.get('num_epochs', spec.config.num_epochs)}" if status else "-"
            eta = format_duration(status.get("eta_s")) if row["state"] == "running" else "-"
            table.add_row(
                spec.entry_id, spec.variant, str(spec.seed), row["state"], epoch, format_number(best.get("grader")),
                eta, row["where"],
            )
        return table


def results_table(specs: list[RunSpec], title: str = "best-grader validation point of each run") -> Table:
    """One row per run at its best-grader validation point (all metrics at that point)."""
    table = Table(title=title)
    entries = {spec.entry_id for spec in specs}
    if len(entries) > 1:
        table.add_column("entry")
    for column in ("variant", "seed", "varied parameters", "grader", "IoU", "SI-logRMSE", "step", "epoch", "state"):
        numeric = column in ("seed", "grader", "IoU", "SI-logRMSE", "step", "epoch")
        table.add_column(column, justify="right" if numeric else "left")
    for spec in specs:
        record = read_run(spec.run_dir)
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
            record.state if has_status(spec.run_dir) else State.NOT_RUN,
        ]
        table.add_row(*([spec.entry_id] if len(entries) > 1 else []), *cells)
    return table
