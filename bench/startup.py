"""Start-up at MiniScapes scale: time from ``mtl-train`` start to its first training step, fresh and resumed.

Builds a 20,000 / 2,500 / 2,500 dataset in the MiniScapes layout (75,000 files: rgb JPEG, semseg and
depth PNG per sample) from tiny valid images (``--height`` x ``--width``; the file count is what start-up
pays for, not the pixels), then:

1. in this process, the pre-flight data check (``check_data_before_training``) with an empty integrity
   cache and again with the cache it wrote (what a resume pays), and the dataset listing itself;
2. ``mtl-train`` (the real network at a tiny crop, one epoch limited to 2 batches, a checkpoint every
   step) from a fresh run directory and an empty cache, timed until the step-1 checkpoint appears; the
   run is then SIGKILLed and started again, which resumes from that checkpoint and is timed until its
   first trace point (written after step 2). Both times include the Python and torch import.

    python bench/startup.py [--train 20000 --val 2500 --test 2500] [--height 32 --width 64] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import print_header, scratch_dir
from mtl.data.miniscapes import encode_depth_png, encode_semseg_png, sample_path
from mtl.run.layout import RunDirectory


def tiny_files(height: int, width: int) -> dict[str, bytes]:
    """One valid file per modality, reused for every sample."""
    rng = np.random.default_rng(0)
    rgb = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(rgb, format="JPEG")
    ids = rng.integers(0, 19, (height, width)).astype(np.uint8)
    depth = rng.uniform(2.0, 80.0, (height, width)).astype(np.float32)
    return {"rgb": rgb.getvalue(), "semseg": encode_semseg_png(ids), "depth": encode_depth_png(depth)}


def build_dataset(root: Path, counts: dict[str, int], files: dict[str, bytes]) -> None:
    for split, count in counts.items():
        for modality, data in files.items():
            sample_path(root, split, modality, 0).parent.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                sample_path(root, split, modality, index).write_bytes(data)


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def wait_for(path: Path, process: subprocess.Popen, started: float, timeout: float) -> float:
    """Seconds from ``started`` until ``path`` exists (and is not empty)."""
    while time.perf_counter() - started < timeout:
        if path.exists() and path.stat().st_size > 0:
            return time.perf_counter() - started
        if process.poll() is not None:
            raise SystemExit(f"mtl-train exited {process.returncode} before {path} appeared:\n"
                             f"{process.stdout.read() if process.stdout else ''}")
        time.sleep(0.02)
    raise SystemExit(f"{path} did not appear within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--val", type=int, default=2_500)
    parser.add_argument("--test", type=int, default=2_500)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--keep", type=Path, help="build into (or reuse) this folder instead of a temporary one")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each start")
    args = parser.parse_args(argv)
    print_header("start-up to the first step at MiniScapes scale", args)
    counts = {"train": args.train, "val": args.val, "test": args.test}

    with scratch_dir("startup") as tmp:
        base = args.keep or Path(tmp)
        root = base / "miniscapes"
        if not (root / "test" / "depth").is_dir():
            wall, _ = timed(lambda: build_dataset(root, counts, tiny_files(args.height, args.width)))
            print(f"built {sum(counts.values()) * 3} files ({args.height}x{args.width}) in {wall:.1f} s")

        from mtl.data.integrity import check_data_before_training
        from mtl.data.miniscapes import MiniScapes

        datasets = {}
        wall, cpu = timed(lambda: datasets.update({s: MiniScapes(root, s) for s in counts}))
        print(f"dataset listing (3 splits): {wall:.2f} s wall, {cpu:.2f} s CPU")
        cache = base / "bench-integrity-cache"
        for attempt in ("empty cache (fresh start)", "cache written by the first check (resume)"):
            wall, cpu = timed(lambda: check_data_before_training(datasets, cache_folder=cache))  # noqa: B023
            print(f"pre-flight data check, {attempt}: {wall:.2f} s wall, {cpu:.2f} s CPU")

        log_dir, cache_dir = base / "run", base / "cache"
        for path in (log_dir, cache_dir):
            subprocess.run(["rm", "-rf", str(path)], check=True)
        command = [sys.executable, "-m", "mtl.cli", "--dataset=miniscapes", f"--dataset_root={root}",
                   f"--aug_input_crop_size={min(args.height, args.width)}", "--batch_size=2", "--num_epochs=1",
                   "--limit_train_batches=2", "--checkpoint_interval_steps=1", "--workers=0",
                   "--workers_validation=0", "--num_threads=1", "--wandb_mode=disabled", "--progress=plain",
                   f"--log_dir={log_dir}"]
        env = {**os.environ, "MTL_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled",
               "PYTHONPATH": str(benchlib.REPO)}

        def seconds_until(path: Path) -> float:
            """Start mtl-train, wait until ``path`` appears, then kill it (SIGKILL: nothing written after)."""
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=benchlib.REPO, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
            seconds = wait_for(path, process, started, args.timeout)
            process.send_signal(signal.SIGKILL)
            process.wait()
            return seconds

        fresh = seconds_until(RunDirectory(log_dir).last)
        print(f"mtl-train, fresh run and empty integrity cache: step-1 checkpoint after {fresh:.1f} s")
        resumed = seconds_until(RunDirectory(log_dir).metrics)
        print(f"mtl-train, resumed from that checkpoint (integrity cache warm): first trace point (step 2) "
              f"after {resumed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
