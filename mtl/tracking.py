"""Where a run's numbers go: the local trace (always) and W&B (online, offline or disabled).

The local trace (the run directory's metric lines, ``mtl.rundir``) is the source of truth; W&B mirrors it. Both receive the same dict per point.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mtl.config import Config
from mtl.io import append_line, atomic_write_text
from mtl.rundir import read_jsonl


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return value  # json writes NaN/Infinity, which read_jsonl and pandas accept
    return value


class LocalTrace:
    """The run's append-only metric lines (fsync per point), at ``RunDirectory.metrics``."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, point: dict[str, Any]) -> None:
        append_line(self.path, json.dumps({k: _json_value(v) for k, v in point.items()}))

    def truncate_after(self, step: int) -> None:
        """On resume: drop points logged after the checkpoint; training re-creates them."""
        if not self.path.exists():
            return
        kept = [p for p in read_jsonl(self.path) if p.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(p) + "\n" for p in kept))


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def resolve_wandb_mode(cfg: Config) -> str:
    if cfg.wandb_mode != "auto":
        return cfg.wandb_mode
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    return "online" if has_wandb_credentials() else "offline"


def derive_run_id(run_dir: Path) -> str:
    """A stable W&B id from the run directory, so a resumed run continues the same W&B run."""
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]


class WandbSink:
    """W&B mirror of the trace, with DESIGN.md's conventions (group = ablation id, job type = variant)."""

    def __init__(self, cfg: Config, run_dir: Path, run_id: str):
        self.mode = resolve_wandb_mode(cfg)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=cfg.wandb_project or os.environ.get("WANDB_PROJECT") or "mtl-ablate",
            entity=cfg.wandb_entity,
            group=cfg.wandb_group,
            job_type=cfg.wandb_job_type,
            tags=list(cfg.wandb_tags) or None,
            name=run_dir.name,
            config=cfg.model_dump(mode="json"),
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=self.mode,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        # Points carry their own step (resumed runs may revisit steps W&B has already seen).
        self.run.define_metric("trainer/step")
        self.run.define_metric("train/*", step_metric="trainer/step")
        self.run.define_metric("val/*", step_metric="trainer/step")
        self.run.define_metric("val/grader", step_metric="trainer/step", summary="max")

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, point: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        if self.run is None:
            return
        data = {k: v for k, v in point.items() if k not in ("step", "time")}
        data["trainer/step"] = point["step"]
        self.run.log({**data, **(extra or {})})

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def images(self, panels: list[np.ndarray], depth_m: np.ndarray, step: int) -> None:
        """Validation panels (input | predicted seg | true seg | predicted depth | true depth) and a histogram."""
        if self.run is None:
            return
        wandb = self._wandb
        data = {"trainer/step": step,
                "val_images/panels": [wandb.Image(p, caption="input | pred seg | true seg | pred depth | true depth")
                                      for p in panels]}
        finite = depth_m[np.isfinite(depth_m)] if depth_m is not None else np.empty(0)
        if finite.size:  # a diverging model predicts NaN; the mirror must not fail the run over its histogram
            data["val/depth_histogram_m"] = wandb.Histogram(finite)
        self.run.log(data)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


class Progress:
    """A rich progress bar (step, loss, ETA) on a TTY; plain lines otherwise."""

    def __init__(self, mode: str, total_steps: int, done_steps: int):
        self.total, self.done = total_steps, done_steps
        self.use_rich = mode == "rich" or (mode == "auto" and sys.stdout.isatty())
        self.enabled = mode != "none"
        self.started = time.monotonic()
        self.start_done = done_steps
        self._last_line = 0.0
        self._bar = None
        if self.enabled and self.use_rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
            from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = RichProgress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task("train", total=total_steps, completed=done_steps, epoch=0, loss="-")
            self._bar.start()

    def eta_seconds(self) -> float | None:
        rate_steps = self.done - self.start_done
        if rate_steps <= 0:
            return None
        return (time.monotonic() - self.started) / rate_steps * (self.total - self.done)

    def update(self, step: int, epoch: int, loss: float | None) -> None:
        self.done = step
        if not self.enabled:
            return
        loss_text = f"{loss:.4f}" if loss is not None else "-"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, epoch=epoch, loss=loss_text)
        elif time.monotonic() - self._last_line >= 5.0 or step == self.total:
            self._last_line = time.monotonic()
            eta = self.eta_seconds()
            eta_text = f"{eta:.0f}s" if eta is not None else "-"
            print(f"epoch {epoch} step {step}/{self.total} loss {loss_text} eta {eta_text}", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
