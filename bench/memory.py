"""Peak memory: resident memory of a ``quick`` run on the CPU, and GPU memory per batch size for ``full``.

1. ``mtl-train`` with ``ablations/profiles/quick.yaml`` in a subprocess (device cpu, W&B disabled). By
   default the run is cut to ``--epochs 1 --limit-train-batches 5``: it still goes through every phase
   that holds memory (training steps, validation, the checkpoints, test prediction, submission.zip);
   ``--full`` runs the whole profile. Printed: ``ru_maxrss`` of the children (the largest single
   process), and the peak of the whole process tree (trainer + loader workers) and of the trainer
   alone, sampled from /proc every 50 ms. The RSS of a bare ``import torch, mtl.train.engine`` is printed
   for reference.
2. With CUDA: peak allocated and reserved GPU memory of training steps at the ``full`` profile's crop
   (256) for each of ``--gpu-batches``, for fp32 and bf16, plus a validation pass on full 256x512
   images at batch 8. Without CUDA this part is skipped with a message.

    python bench/memory.py [--threads 1] [--full] [--gpu-batches 2,4,8,16]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import REPO, SHARED_DATASET, bench_config, build_trainer, load_batches, print_header, scratch_dir
from mtl.config import config_from_cli

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/*/stat parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(parents.get(current, []))
    return found


class TreeSampler:
    """Samples the RSS of a process and of its whole tree until it exits; keeps the peaks."""

    def __init__(self, process: subprocess.Popen, interval: float = 0.05):
        self.process, self.interval = process, interval
        self.peak_tree = self.peak_main = 0
        self.peak_processes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.process.poll() is None:
            pids = descendants(self.process.pid)
            sizes = [rss_bytes(p) for p in pids]
            self.peak_tree = max(self.peak_tree, sum(sizes))
            self.peak_main = max(self.peak_main, sizes[0])
            self.peak_processes = max(self.peak_processes, sum(1 for s in sizes if s))
            time.sleep(self.interval)

    def join(self) -> None:
        self._thread.join()


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def import_baseline() -> int:
    """Peak RSS (bytes) of a process that only imports torch and the engine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-c", "import torch, mtl.train.engine"], cwd=REPO, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) * 1024  # ru_maxrss is in KiB on Linux


def quick_run(tmp: Path, args) -> None:
    profile = REPO / "ablations" / "profiles" / "quick.yaml"
    overrides = [f"--log_dir={tmp / 'quick'}", "--device=cpu", f"--num_threads={args.threads}",
                 "--wandb_mode=disabled", "--progress=none"]
    if not args.full:
        overrides += [f"--num_epochs={args.epochs}", f"--limit_train_batches={args.limit_train_batches}"]
    cfg = config_from_cli(["--config", str(profile), *overrides])
    from mtl.data import resolve_dataset_root

    resolve_dataset_root(cfg)  # build the dataset outside the measured process
    baseline = import_baseline()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "mtl.cli", "--config", str(profile), *overrides]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(process)
    output = process.communicate()[0]
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"the quick run failed (exit {process.returncode}):\n{output[-3000:]}")
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    length = "whole profile" if args.full else f"{args.epochs} epoch(s) x {args.limit_train_batches} batches"
    print(f"quick run ({length}, crop {cfg.aug_input_crop_size}, batch {cfg.batch_size}, "
          f"validation batch {cfg.batch_size_validation}, {cfg.workers} loader worker(s), {args.threads} thread(s)): "
          f"{seconds:.0f} s")
    print(f"  ru_maxrss of the children (largest single process): {mib(maxrss)}")
    print(f"  sampled peak, whole process tree ({sampler.peak_processes} processes at most): "
          f"{mib(sampler.peak_tree)}")
    print(f"  sampled peak, trainer process alone: {mib(sampler.peak_main)}")
    print(f"  for reference, a process that only imports torch and mtl.train.engine: {mib(baseline)}")


def gpu_table(tmp: Path, batch_sizes: list[int]) -> None:
    if not torch.cuda.is_available():
        print("GPU memory: no CUDA device on this machine; skipped (run this script on a GPU host for the table)")
        return
    from mtl.train.evaluation import evaluate
    from mtl.train.runtime import to_device

    device = torch.device("cuda")
    print(f"GPU memory, full-profile crop 256, {torch.cuda.get_device_name(0)}:")
    print("| amp | batch | peak allocated | peak reserved |")
    print("|---|---:|---:|---:|")
    for amp in ("none", "bf16"):
        for batch_size in batch_sizes:
            cfg = bench_config(**SHARED_DATASET, synthetic_height=256, synthetic_width=512, aug_input_crop_size=256,
                               batch_size=batch_size, amp=amp)
            trainer, datasets = build_trainer(cfg, tmp / f"gpu-{amp}-{batch_size}", device)
            batches = [to_device(b, device, False) for b in load_batches(datasets["train"], cfg, 2)]
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            trainer.model.train()
            for batch in batches:
                trainer.train_step(batch)
            torch.cuda.synchronize()
            print(f"| {amp} | {batch_size} | {mib(torch.cuda.max_memory_allocated())} | "
                  f"{mib(torch.cuda.max_memory_reserved())} |")
            if batch_size == batch_sizes[-1]:
                val_cfg = cfg.replace(batch_size_validation=8)
                val = [to_device(b, device, False) for b in load_batches(datasets["val"], val_cfg, 1, train=False)]
                torch.cuda.reset_peak_memory_stats()
                evaluate(trainer.model, val, trainer.loss_fn, trainer.depth_unit, device, val_cfg)
                torch.cuda.synchronize()
                print(f"| {amp} | validation 8 x 256x512 | {mib(torch.cuda.max_memory_allocated())} | "
                      f"{mib(torch.cuda.max_memory_reserved())} |")
            del trainer, batches
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the quick run")
    parser.add_argument("--full", action="store_true", help="run the whole quick profile (minutes on a CPU)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the shortened quick run")
    parser.add_argument("--limit-train-batches", type=int, default=5, help="batches per epoch of the shortened run")
    parser.add_argument("--gpu-batches", default="2,4,8,16", help="comma list of training batch sizes (GPU part)")
    parser.add_argument("--skip-quick", action="store_true", help="only the GPU part")
    args = parser.parse_args(argv)
    print_header("peak memory", args)
    with scratch_dir("memory") as tmp:
        if not args.skip_quick:
            quick_run(Path(tmp), args)
        gpu_table(Path(tmp), [int(b) for b in args.gpu_batches.split(",") if b.strip()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
