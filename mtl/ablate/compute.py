"""Compute, counted and estimated (docs/DESIGN.md §7.3): the optimizer steps and device-hours an entry has
spent, what its full grid costs, and both estimated before anything runs from this machine's recorded
throughput.

A run's steps are its epochs times its batches per epoch (training images // batch size, capped by
``limit_train_batches``). Its device time is the training time its status records (one device a run).
Throughput is measured in seconds per optimizer step per GFLOP of a batch (model GFLOPs x batch size),
so that runs of one model predict the cost of another; it comes from the finished runs this machine has
recorded, and is None when there are none.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from mtl.config import Config
from mtl.run.errors import RecordError
from mtl.run.layout import find_run_dirs
from mtl.run.model import RunState
from mtl.run.records import read_config, read_status

from .planner import Plan, RunSpec
from .steps import run_steps, steps_per_epoch


@dataclass(frozen=True)
class Spent:
    steps: int
    device_s: float
    runs: int

    @property
    def device_hours(self) -> float:
        return self.device_s / 3600.0


def _distinct(specs: Iterable[RunSpec]) -> list[RunSpec]:
    seen, out = set(), []
    for spec in specs:
        if spec.run_dir not in seen:
            seen.add(spec.run_dir)
            out.append(spec)
    return out


def spent(plan: Plan) -> Spent:
    """What the plan's runs have trained so far: optimizer steps (where each stands) and device time."""
    steps, seconds, runs = 0, 0.0, 0
    for spec in _distinct(plan.runs):
        try:
            status = read_status(spec.run_dir)
        except RecordError:
            continue  # named by every reader of the records; it counts for nothing here
        if status is None or status.step == 0 and not status.diverged_step:
            continue
        steps += max(status.step, status.diverged_step or 0)
        seconds += status.elapsed_s or 0.0
        runs += 1
    return Spent(steps, seconds, runs)


def planned_steps(specs: Iterable[RunSpec]) -> int:
    """The optimizer steps still to train for ``specs``: each to its ``stop_after_epoch`` (or the end), less
    where it stands."""
    total = 0
    for spec in _distinct(specs):
        target = spec.config.stop_after_epoch or spec.config.num_epochs
        try:
            status = read_status(spec.run_dir)
        except RecordError:
            status = None
        done = status.step if status is not None and status.state is not RunState.DIVERGED else 0
        total += max(0, target * steps_per_epoch(spec.config) - done)
    return total


def full_grid_steps(plan: Plan) -> int:
    """Every planned run trained in full (for a raced entry: every variant with every seed the race may use)."""
    return sum(run_steps(spec.config) for spec in _distinct(plan.runs))


def within_budget(plan: Plan, budget: Optional[int]) -> tuple[list[RunSpec], list[RunSpec]]:
    """The plan's runs that fit ``budget`` optimizer steps for the entry (in plan order, counting what it has
    spent), and those left out; every run without a budget."""
    if budget is None:
        return list(plan.runs), []
    total = spent(plan).steps
    fits, left = [], []
    for spec in plan.runs:
        cost = planned_steps([spec])
        if total + cost <= budget:
            fits.append(spec)
            total += cost
        else:
            left.append(spec)
    return fits, left


# ---------------------------------------------------------------------------------------- estimates
def _crop_gflops(config: Config) -> float:
    """Forward GFLOPs of one training image (a crop) of ``config``'s model (builds it: torch)."""
    from mtl.models import model_summary

    side = max(32, round(config.aug_input_crop_size / 32) * 32)
    return float(model_summary(config, side, side)["gflops"])


def recorded_rate(runs_dir: Path) -> tuple[Optional[float], int]:
    """(seconds per optimizer step per forward GFLOP of a training batch, runs it rests on) from the
    finished runs below ``runs_dir``: the median of training seconds / (steps x crop GFLOPs x batch size);
    (None, 0) when none has what it takes. A run's recorded GFLOPs are at its validation size, scaled to
    its crop by the pixel count (a convolutional net's cost grows with it)."""
    rates = []
    if not Path(runs_dir).is_dir():
        return None, 0
    for run_dir in find_run_dirs(runs_dir):
        try:
            status = read_status(run_dir)
            config = read_config(run_dir) or {}
        except RecordError:
            continue
        if status is None or status.state is not RunState.FINISHED or not status.step or not status.elapsed_s:
            continue
        model, crop, batch = status.model, config.get("aug_input_crop_size"), config.get("batch_size")
        if model is None or model.input is None or not model.gflops or not isinstance(crop, int) \
                or not isinstance(batch, int):
            continue
        height, width = model.input
        crop_gflops = model.gflops * crop * crop / (height * width)
        rates.append(status.elapsed_s / (status.step * crop_gflops * batch))
    return (statistics.median(rates), len(rates)) if rates else (None, 0)


def flops_rate(seconds: float = 0.3) -> float:
    """Seconds per forward GFLOP of training, from this device's measured matrix-multiply rate: a training
    step costs about three forward passes (forward, and twice that backward). Rough: real layers run below
    a large matmul's rate."""
    import time

    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    gflops_per_s = count * 2 * 512**3 / 1e9 / (time.perf_counter() - start)
    return 3.0 / gflops_per_s


@dataclass(frozen=True)
class Estimate:
    full_steps: int
    full_hours: float
    race_steps: Optional[tuple[int, int]]  # (least, most) a race can spend
    race_hours: Optional[tuple[float, float]]
    rate_source: str


def estimate(plan: Plan, runs_dir: Path) -> Estimate:
    """What ``plan`` costs before anything runs: its full grid, and for a raced plan the least and the most
    its race can spend, in optimizer steps and device-hours on this machine."""
    rate, based_on = recorded_rate(runs_dir)
    source = (f"this machine's recorded throughput, the median of {based_on} finished runs" if rate is not None
              else "FLOPs, at this device's measured matrix-multiply rate (rough: no finished run is recorded here)")
    rate = rate if rate is not None else flops_rate()
    variants: dict[str, RunSpec] = {}
    for spec in plan.runs:
        variants.setdefault(spec.variant, spec)
    seconds_per_step = {v: rate * _crop_gflops(s.config) * s.config.batch_size for v, s in variants.items()}
    full = {spec.run_dir: (spec.variant, run_steps(spec.config)) for spec in plan.runs}
    full_steps = sum(steps for _, steps in full.values())
    full_s = sum(steps * seconds_per_step[v] for v, steps in full.values())
    if plan.racing is None:
        return Estimate(full_steps, full_s / 3600, None, None, source)
    settings, config = plan.racing, plan.runs[0].config
    per_epoch, epochs = steps_per_epoch(config), config.num_epochs
    first = settings.rung_epochs(epochs)[0]
    seeds = settings.min_seeds
    cheapest = min(seconds_per_step.values())
    least = len(variants) * seeds * first * per_epoch + seeds * (epochs - first) * per_epoch
    most = len(variants) * min(settings.max_seeds, len(settings.seed_order(plan.entry.seeds))) * epochs * per_epoch
    budget = settings.budget_steps(len(variants), epochs, per_epoch)
    if budget is not None:
        least, most = min(least, budget), min(most, budget)
    dearest = max(seconds_per_step.values())
    return Estimate(full_steps, full_s / 3600, (least, most), (least * cheapest / 3600, most * dearest / 3600),
                    source)
