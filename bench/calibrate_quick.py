"""Calibrate the quick profile on a measured learning curve.

Trains the template baseline (the quick profile as it is: SGD 0.01, no dilation, no ASPP, no skip)
and a strong configuration (Adam 1e-3, dilation FFT, ASPP, the 4x skip) for ``--epochs`` epochs each,
with every seed of ``--seeds``, as real ``mtl-train`` subprocesses, and prints the validation curve
(mean and standard deviation over seeds of grader, IoU and SI-logRMSE at every epoch), the gap between
the two configurations in units of seed noise, and the wall and CPU seconds each run cost.

The curve comes from runs of the longest budget (the poly learning rate decays over all of it), so a
point at epoch 4 of an 8-epoch run is not the end of a 4-epoch run; ``--epochs 4`` measures the quick
budget itself. Runs are kept under ``--out`` and not trained again when their summary exists.

    python bench/calibrate_quick.py --epochs 8 --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import REPO, machine_line
from mtl.run.trace import read_validation_lines

GRADER = "val/grader"
METRICS = (GRADER, "val/iou", "val/si_logrmse")
CONFIGS = {
    "baseline": [],
    "strong": ["--optimizer", "adam", "--optimizer_lr", "0.001", "--dilation_layer4", "true",
               "--aspp", "true", "--decoder_skip", "true"],
}


def run_command(name: str, seed: int, epochs: int, threads: int, out: Path) -> tuple[list[str], Path]:
    log_dir = out / f"{name}-e{epochs}-s{seed}"
    train = shutil.which("mtl-train", path=str(Path(sys.executable).parent)) or "mtl-train"
    command = [train, "--config", str(REPO / "ablations/profiles/quick.yaml"), "--num_epochs", str(epochs),
               "--seed", str(seed), "--num_threads", str(threads), "--device", "cpu", "--wandb_mode", "disabled",
               "--log_dir", str(log_dir), *CONFIGS[name]]
    return command, log_dir


def train_all(jobs: list[tuple[str, int]], epochs: int, threads: int, parallel: int, out: Path) -> dict:
    """Runs the (config, seed) jobs ``parallel`` at a time; returns each one's wall and CPU seconds."""
    costs: dict[tuple[str, int], tuple[float, float]] = {}
    pending = [job for job in jobs if not (run_command(*job, epochs, threads, out)[1] / "submission.zip").exists()]
    running: dict[int, tuple[tuple[str, int], float]] = {}
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            command, log_dir = run_command(*job, epochs, threads, out)
            shutil.rmtree(log_dir, ignore_errors=True)
            log_dir.parent.mkdir(parents=True, exist_ok=True)
            with open(out / f"{log_dir.name}.log", "w") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            running[process.pid] = (job, time.perf_counter())
        pid, status, usage = os.wait4(-1, 0)
        job, started = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"calibrate_quick: {job} failed; see {out}/{run_command(*job, epochs, threads, out)[1].name}.log")
        costs[job] = (time.perf_counter() - started, usage.ru_utime + usage.ru_stime)
        print(f"  trained {job[0]} seed {job[1]}: {costs[job][0]:.0f} s wall, {costs[job][1]:.0f} s CPU", flush=True)
    return costs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=8, help="training epochs per run (24 steps each)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--out", type=Path, default=Path("/tmp/mtl-calibrate"))
    args = p.parse_args()
    print(machine_line())
    print(f"quick profile, {args.epochs} epochs, seeds {args.seeds}, {args.jobs} runs at once x {args.threads} threads")
    jobs = [(name, seed) for seed in args.seeds for name in CONFIGS]
    costs = train_all(jobs, args.epochs, args.threads, args.jobs, args.out)

    curves = {job: read_validation_lines(run_command(*job, args.epochs, args.threads, args.out)[1] / "metrics.jsonl")
              for job in jobs}
    print("\nmean ± sd over seeds; 'best' is each run's best grader up to that epoch (what a report shows)")
    print("epoch  step | baseline grader  best          IoU   SI   | strong grader   best          IoU   SI   "
          "| best gap  gap/sd")
    for index in range(args.epochs):
        row = {}
        for name in CONFIGS:
            points = [curves[(name, seed)][index] for seed in args.seeds]
            row[name] = {key: mean_std([pt[key] for pt in points]) for key in METRICS}
            row[name]["best"] = mean_std([max(pt[GRADER] for pt in curves[(name, seed)][:index + 1])
                                          for seed in args.seeds])
            step = points[0]["step"]
        gap = row["strong"]["best"][0] - row["baseline"]["best"][0]
        noise = max(row["strong"]["best"][1], row["baseline"]["best"][1])
        cells = []
        for name in CONFIGS:
            (g, gs), (iou, _), (si, _), (b, bs) = (row[name][k] for k in (*METRICS, "best"))
            cells.append(f"{g:5.2f} ±{gs:4.2f}  {b:5.2f} ±{bs:4.2f}  {iou:5.1f} {si:5.1f}")
        ratio = f"{gap / noise:6.1f}" if noise > 0 else "     -"
        print(f"{index + 1:5d} {step:5d} | {cells[0]} | {cells[1]} | {gap:8.2f} {ratio}")
    if costs:
        walls = [wall for wall, _ in costs.values()]
        cpus = [cpu for _, cpu in costs.values()]
        print(f"\nper run (trained now): wall {statistics.fmean(walls):.0f} s, CPU {statistics.fmean(cpus):.0f} s "
              f"(mean of {len(costs)}; {args.jobs} at once)")
    print("gap/sd: the gap in best grader over the larger of the two standard deviations across seeds")


if __name__ == "__main__":
    main()
