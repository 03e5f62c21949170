"""Hand-made run directories in the layout of docs/DESIGN.md §4.1, for tests and benchmarks of the
report tools (nothing here trains: the numbers are whatever the caller plants)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from mtl.config import make_config
from mtl.run.layout import RunDirectory, run_name
from mtl.run.model import Packed
from mtl.run.summary import write_run_summary


def validation_point(step: int, epoch: int, grader: float, iou: float, si_logrmse: float,
                     **extra: float) -> dict[str, Any]:
    """A validation line of a run's metric trace (val/ keys) with the given values."""
    point = {"step": step, "epoch": epoch, "time": float(step), "val/grader": grader, "val/iou": iou,
             "val/si_logrmse": si_logrmse, "val/loss": 1.0, "val/loss_semseg": 0.5, "val/loss_depth": 0.5}
    point.update({f"val/{k}": v for k, v in extra.items()})
    return point


def training_point(step: int, epoch: int, loss: float = 1.0) -> dict[str, Any]:
    return {"step": step, "epoch": epoch, "time": float(step), "train/loss": loss, "train/loss_semseg": loss / 2,
            "train/loss_depth": loss / 2, "train/lr": 0.01}


def plant_run(runs_root: str | Path, ablation: str, variant: str, seed: int, *,
              overrides: dict[str, Any] | None = None, points: Iterable[dict[str, Any]] = (),
              state: str = "finished", model: dict[str, Any] | None = None,
              status_extra: dict[str, Any] | None = None, summary: bool = True) -> Path:
    """Write ``<runs_root>/<ablation>/<variant>-s<seed>-<hash>/`` with its config, status and metric trace,
    and (``summary``) its summary file as the trainer writes it; returns the run directory."""
    values = {**(overrides or {}), "seed": seed, "wandb_group": ablation, "wandb_job_type": variant}
    cfg = make_config(values)
    run_dir = Path(runs_root) / ablation / run_name(variant, seed, cfg.config_hash())
    run = RunDirectory(run_dir)
    cfg = cfg.replace(log_dir=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    run.config_path.write_text(cfg.to_yaml(exclude=("log_dir",)))  # as the trainer writes it (no path)
    points = list(points)
    last = points[-1] if points else {"step": 0, "epoch": 0}
    status = {
        "state": state, "error": None, "epoch": last.get("epoch", 0), "num_epochs": cfg.num_epochs,
        "step": last.get("step", 0), "best": None, "config_hash": cfg.config_hash(), "code_version": "planted",
        "started_at": "2024-01-01T00:00:00+00:00", "updated_at": "2024-01-01T01:00:00+00:00",
        "finished_at": "2024-01-01T01:00:00+00:00" if state == "finished" else None, "elapsed_s": 3600.0,
        "eta_s": None, "pid": 1, "host": "planted", "model": model, "wandb_run_id": None,
        **(status_extra or {}),
    }
    run.status_path.write_text(json.dumps(status, indent=2) + "\n")
    run.metrics.write_text("".join(json.dumps(p) + "\n" for p in points))
    if summary:
        write_run_summary(run)
    return run_dir


def plant_predictions(run_dir: Path, predictions: dict[int, tuple[Any, Any]]) -> None:
    """``predictions/semseg/<i>.png`` and ``predictions/depth/<i>.png`` from {index: (class ids, depth m)}."""
    from mtl.data.miniscapes import write_depth, write_semseg

    for task in ("semseg", "depth"):
        (run_dir / "predictions" / task).mkdir(parents=True, exist_ok=True)
    for index, (ids, depth_m) in predictions.items():
        write_semseg(run_dir / "predictions" / "semseg" / f"{index}.png", ids)
        write_depth(run_dir / "predictions" / "depth" / f"{index}.png", depth_m)


def plant_submission(run_dir: Path, checkpoint_bytes: bytes = b"planted checkpoint") -> Path:
    """``submission.zip`` from the run's predictions/, config and metrics, through mtl.train.submission's writer
    (``source.zip`` holds the real mtl/ sources and cmd.txt)."""
    from mtl.config import load_yaml
    from mtl.train.submission import build_source_zip, write_submission

    cfg = make_config(load_yaml(run_dir / "config.yaml"))
    checkpoint = run_dir / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(checkpoint_bytes)
    source_zip = run_dir / "source.zip"
    source_zip.write_bytes(build_source_zip(cfg))
    indices = sorted(int(p.stem) for p in (run_dir / "predictions" / "semseg").glob("*.png"))
    path = run_dir / "submission.zip"
    write_submission(path, predictions_dir=run_dir / "predictions", test_indices=indices, checkpoint=checkpoint,
                     checkpoint_name="best", source_zip=source_zip, metrics_path=RunDirectory(run_dir).metrics)
    return path


def plant_reference_runs(root: Path, ablation: str) -> Path:
    """Four runs of ``ablation`` that exercise the best-point rule and the notes of a report."""
    # IoU peaks at step 20, the grader at step 30: the result is step 30 with its own IoU.
    plant_run(root, ablation, "peak", 0, overrides={"optimizer_lr": 0.1}, model={"params": 22_000_000, "gflops": 7.5},
              points=[training_point(10, 1), validation_point(10, 1, 10.0, 60.0, 40.0),
                      training_point(20, 2), validation_point(20, 2, 20.0, 80.0, 30.0),
                      training_point(30, 3), validation_point(30, 3, 25.0, 70.0, 20.0)])
    # Equal graders at steps 20 and 30: the earliest wins, and the tie is noted.
    plant_run(root, ablation, "tie", 0, overrides={"optimizer_lr": 0.01},
              points=[validation_point(10, 1, 5.0, 55.0, 50.0), validation_point(20, 2, 12.5, 60.0, 47.5),
                      validation_point(30, 3, 12.5, 61.0, 48.5)])
    # A diverged run: NaN points are skipped and counted.
    plant_run(root, ablation, "nan", 0, overrides={"optimizer_lr": 1.0}, state="diverged",
              points=[validation_point(10, 1, 3.0, 52.0, 49.0), validation_point(20, 2, math.nan, math.nan, math.nan)])
    # A run that failed before its first validation.
    plant_run(root, ablation, "never", 0, overrides={"optimizer_lr": 0.001}, state="failed",
              points=[training_point(10, 1)])
    return root


def plant_planned(spec: Any, graders: list[float], iou: float = 50.0, si_logrmse: float = 30.0) -> None:
    """A finished run where the planner expects ``spec`` (a planned run), one validation point per epoch
    with the given graders (the same IoU and SI-logRMSE at each), 10 steps an epoch."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    (spec.run_dir / "config.yaml").write_text(spec.config.to_yaml())
    lines = []
    for epoch, grader in enumerate(graders, start=1):
        lines.append(json.dumps({"step": epoch * 10, "epoch": epoch, "time": 1.0, "train/loss": 1.0}))
        lines.append(json.dumps({"step": epoch * 10, "epoch": epoch, "time": 1.0, "val/grader": grader,
                                 "val/iou": iou, "val/si_logrmse": si_logrmse}))
    (spec.run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    best_epoch = max(range(len(graders)), key=lambda i: graders[i]) + 1
    best = {"step": best_epoch * 10, "epoch": best_epoch, "grader": max(graders), "iou": iou,
            "si_logrmse": si_logrmse}
    (spec.run_dir / "status.json").write_text(json.dumps({"state": "finished", "epoch": len(graders),
                                                          "num_epochs": len(graders), "best": best}))


def placeholder_submission(run_dir: Path, data: bytes = b"placeholder") -> Packed:
    """A stand-in submission.zip and the record of it a trainer keeps in the status (``submission=``): the
    suite counts a finished run finished only when its submission.zip is the one its status says was packed."""
    import hashlib

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    RunDirectory(run_dir).submission.write_bytes(data)
    return Packed(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
