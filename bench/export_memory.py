"""Peak memory of ``mtl-ablate export`` against the number of runs it archives: it must stay flat.

Plants one entry with N finished runs under a temporary folder, each with a realistic submission.zip
(40 test predictions, a source.zip, metrics.csv and a real torch checkpoint of --checkpoint-mb MiB of
random float32 weights, incompressible like trained ones), then runs the export command as a child
process for each N and reports that process's peak RSS (as /usr/bin/time -v would) and the archive size.
The runs share one submission.zip through hard links, so planting 20 runs costs one checkpoint of disk.
Prints the figures; it asserts nothing.

    python bench/export_memory.py [--runs 5 20] [--checkpoint-mb 80] [--code DIR] [--keep DIR]

``--code`` runs another checkout's export (e.g. the one before streaming) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from mtl.config import make_config  # noqa: E402
from mtl.run.layout import METRICS_FILE, RunDirectory  # noqa: E402

ENTRY = "problem1.lr"
TEST_IMAGES = 40

# Runs the command as its own child and prints that child's peak RSS: measured from a fresh, small
# parent, so the figure is the command's own and not inherited from whoever forked it.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(err.decode()[-2000:])
print(f"PEAK_RSS_KB {usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def lr(index: int) -> float:
    return round(1e-4 * (1 + index), 6)


def write_entries(folder: Path, runs: int) -> None:
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "quick.yaml").write_text("num_epochs: 2\n")
    variants = "".join(f"  - name: lr{i}\n    overrides: {{optimizer_lr: {lr(i)}}}\n" for i in range(runs))
    (folder / f"{ENTRY}.yaml").write_text(
        f"question: Which learning rate?\nitem: 1.1a\nbase: quick\nvariants:\n{variants}"
        "report:\n  columns: [optimizer_lr]\n"
    )


def build_submission(folder: Path, checkpoint_mb: int) -> Path:
    """One realistic submission.zip, written by mtl.train.submission's own writer."""
    import torch

    from mtl.data.miniscapes import write_depth, write_semseg
    from mtl.train.submission import build_source_zip, write_submission

    rng = np.random.default_rng(0)
    for task in ("semseg", "depth"):
        (folder / "predictions" / task).mkdir(parents=True, exist_ok=True)
    for index in range(TEST_IMAGES):
        write_semseg(
            folder / "predictions" / "semseg" / f"{index}.png", rng.integers(0, 19, (128, 256), dtype=np.uint8)
        )
        write_depth(folder / "predictions" / "depth" / f"{index}.png", rng.uniform(4, 80, (128, 256)))
    weights = torch.from_numpy(rng.standard_normal(checkpoint_mb * (1 << 20) // 4, dtype=np.float32))
    torch.save({"model": {"weights": weights}, "step": 1}, folder / "best.pt")
    (folder / "source.zip").write_bytes(build_source_zip(make_config({})))
    (folder / METRICS_FILE).write_text(json.dumps({"step": 1, "epoch": 1, "val/grader": 1.0}) + "\n")
    path = folder / "submission.zip"
    write_submission(path, predictions_dir=folder / "predictions", test_indices=list(range(TEST_IMAGES)),
                     checkpoint=folder / "best.pt", checkpoint_name="best", source_zip=folder / "source.zip",
                     metrics_path=folder / METRICS_FILE)
    return path


def plant_runs(runs_dir: Path, runs: int, submission: Path) -> None:
    """Finished run directories in the layout of docs/DESIGN.md §4.1, each linking ``submission``."""
    for index in range(runs):
        variant = f"lr{index}"
        cfg = make_config({"optimizer_lr": lr(index), "num_epochs": 2, "seed": 0, "wandb_group": ENTRY,
                           "wandb_job_type": variant})
        run_dir = runs_dir / ENTRY / f"{variant}-s0-{cfg.config_hash()}"
        run_dir.mkdir(parents=True)
        run = RunDirectory(run_dir)
        run.config_path.write_text(cfg.replace(log_dir=str(run_dir)).to_yaml())
        point = {"step": 10, "epoch": 1, "time": 10.0, "val/grader": 10.0 + index, "val/iou": 50.0,
                 "val/si_logrmse": 40.0, "val/loss": 1.0, "val/loss_semseg": 0.5, "val/loss_depth": 0.5}
        run.metrics.write_text(json.dumps(point) + "\n")
        status = {"state": "finished", "error": None, "epoch": 1, "num_epochs": 2, "step": 10, "best": None,
                  "config_hash": cfg.config_hash(), "code_version": "bench", "started_at": "2024-01-01T00:00:00+00:00",
                  "updated_at": "2024-01-01T01:00:00+00:00", "finished_at": "2024-01-01T01:00:00+00:00",
                  "elapsed_s": 3600.0, "eta_s": None, "pid": 1, "host": "bench", "model": None, "wandb_run_id": None}
        run.status_path.write_text(json.dumps(status, indent=2) + "\n")
        os.link(submission, run.submission)


def measure_export(work: Path, runs: int, submission: Path, code: Path) -> dict:
    root = work / f"n{runs}"
    write_entries(root / "ablations", runs)
    plant_runs(root / "runs", runs, submission)
    command = [sys.executable, "-m", "mtl.suite", "export", "--team", "bench", "--runs-dir", str(root / "runs"),
               "--ablations-dir", str(root / "ablations"), "--out", str(root / "out"), "--no-figures", "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(code), "WANDB_MODE": "disabled", "MTL_CACHE_DIR": str(work / "cache")}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _MEASURE, *command], cwd=code, env=env, capture_output=True,
                            text=True)
    wall = time.perf_counter() - started
    stderr, _, peak = result.stderr.rpartition("PEAK_RSS_KB ")
    archives = list((root / "out").glob("*.zip"))
    figures = {"runs": runs, "exit": result.returncode, "peak_rss_mib": round(int(peak) / 1024),
               "archive_mib": round(archives[0].stat().st_size / (1 << 20)) if archives else None,
               "wall_s": round(wall, 1)}
    if result.returncode != 0:
        figures["stderr"] = stderr.strip()[-600:]
    shutil.rmtree(root)  # the archive is as large as the runs' submissions together
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--checkpoint-mb", type=int, default=80)
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose export runs (default: this one)")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mtl-export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        submission = build_submission(work / "submission", args.checkpoint_mb)
        print(f"submission.zip: {submission.stat().st_size / (1 << 20):.0f} MiB; code: {args.code}")
        for runs in args.runs:
            print(json.dumps(measure_export(work, runs, submission, args.code.resolve())), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
