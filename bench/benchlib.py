"""Shared pieces of the benchmark scripts: the machine line, ABBA-interleaved measurement, and an
in-memory engine set-up (a real :class:`mtl.train.engine.Trainer` whose data are batches held in memory).

Every benchmark quotes ratios of two measurements taken in alternation within one process, so load
from other processes on a shared machine and clock drift hit both sides alike. Absolute times are
printed too, but only the ratios are comparable between runs.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/<name>.py` puts bench/ first on the path, not the repository
    sys.path.insert(0, str(REPO))

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

from mtl.config import Config, make_config  # noqa: E402


# ------------------------------------------------------------------------------------ the machine
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_line() -> str:
    """One line naming what the figures were measured on (they mean little without it)."""
    parts = [f"CPU {cpu_model()}", f"{usable_cores()} cores", f"torch {torch.__version__}",
             f"python {platform.python_version()}"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no GPU")
    with contextlib.suppress(OSError):  # no load average on this platform
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    return ", ".join(parts)


def print_header(title: str, args: Any) -> None:
    print(f"== {title}")
    print(f"machine: {machine_line()}")
    print("options: " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in sorted(vars(args).items())))


# ------------------------------------------------------------------------------------ measurement
def abba(first: Callable[[], Any], second: Callable[[], Any], rounds: int) -> tuple[list[Any], list[Any]]:
    """Call ``first`` and ``second`` ``rounds`` times each in the order A B B A A B ...

    Alternating which side goes first cancels a steady drift as well as a shared level of load.
    """
    a_results: list[Any] = []
    b_results: list[Any] = []
    for i in range(rounds):
        if i % 2 == 0:
            a_results.append(first())
            b_results.append(second())
        else:
            b_results.append(second())
            a_results.append(first())
    return a_results, b_results


def timed(fn: Callable[[], Any], sync: Callable[[], None] = lambda: None) -> float:
    """Wall seconds of ``fn()`` (``sync`` waits for queued device work before each clock read)."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def timed_wall_cpu(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``. On a CPU run with a fixed thread count,
    CPU seconds barely move when other processes load the machine, so they resolve small differences
    that wall time drowns; they miss time spent waiting (fsync, sleeping), which wall time keeps."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [n / d for n, d in zip(numerators, denominators)]


def spread(values: list[float]) -> str:
    """``median [min..max]`` of a list, for a line of output."""
    return f"{median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"


# ------------------------------------------------------------------------------------ engine set-up
# One synthetic dataset at MiniScapes' image size shared by the data benchmarks (built once, ~1 s an image).
SHARED_DATASET = {"synthetic_num_train": 48, "synthetic_num_val": 16, "synthetic_num_test": 4}


def bench_config(**overrides: Any) -> Config:
    """A run config for benchmarking: synthetic data, no W&B, no console progress, in-process loading."""
    values = {"dataset": "synthetic", "wandb_mode": "disabled", "progress": "none", "workers": 0,
              "workers_validation": 0}
    values.update(overrides)
    return make_config(values, source="benchmark options")


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def build_trainer(cfg: Config, run_dir: Path, device: torch.device | None = None):
    """A real engine Trainer (model, optimizer, scheduler, loss, depth unit, local trace, disabled W&B
    sink) set up the way ``mtl.train.engine._build_trainer`` sets one up, for in-memory benchmarking."""
    from mtl.data import build_datasets, load_depth_unit
    from mtl.models import build_model
    from mtl.run.layout import RunDirectory
    from mtl.run.status import StatusWriter
    from mtl.run.trace import LocalTrace
    from mtl.train.hooks import default_hooks
    from mtl.train.loop import Trainer
    from mtl.train.losses import MultiTaskLoss
    from mtl.train.optim import build_optimizer, build_scheduler
    from mtl.train.runtime import seed_everything
    from mtl.train.tracking import Progress, WandbSink
    from mtl.train.weighting import build_weighting

    device = device or torch.device("cpu")
    seed_everything(cfg.seed, cfg.deterministic)
    datasets = build_datasets(cfg)
    depth_unit = load_depth_unit(cfg, datasets["train"].root)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weighting = build_weighting(cfg, device)
    optimizer = build_optimizer(cfg, model, weighting.parameters())
    run = RunDirectory(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg=cfg, run=run, device=device, model=model, optimizer=optimizer,
                      scheduler=build_scheduler(cfg, optimizer), loss_fn=MultiTaskLoss(cfg, depth_unit),
                      depth_unit=depth_unit, trace=LocalTrace(run.metrics), batches=1,
                      scaler=torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None,
                      weighting=weighting)
    # The hooks of a real run: trace, W&B, progress and its status record, checkpoints.
    sink = WandbSink(cfg, run.path, "bench")
    trainer.hooks = default_hooks(Progress(cfg.progress, 10**9, 0), StatusWriter(run), sink, val_loader=[])
    return trainer, datasets


def load_batches(dataset, cfg: Config, count: int, *, train: bool = True) -> list[dict[str, Any]]:
    """``count`` batches of ``dataset`` through the engine's own loader (cycling epochs if needed)."""
    from mtl.data.loading import EpochSampler, make_loader

    sampler = EpochSampler(len(dataset), cfg.seed) if train else None
    loader = make_loader(dataset, cfg.replace(workers=0, workers_validation=0), train=train, sampler=sampler)
    batches: list[dict[str, Any]] = []
    epoch = 0
    while len(batches) < count:
        if sampler is not None:
            sampler.set_epoch(epoch)
        before = len(batches)
        for batch in loader:
            batches.append(batch)
            if len(batches) == count:
                break
        if len(batches) == before:
            raise ValueError(f"dataset {dataset!r} yields no batch of size {cfg.batch_size}")
        epoch += 1
    return batches


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"mtl-bench-{prefix}-")
