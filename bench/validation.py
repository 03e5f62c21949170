"""Share of validation time spent in metric accumulation (goal: <= 5%).

Runs the engine's real ``evaluate`` over validation batches held in memory (so the denominator is the
model and the losses, not file decoding: the stricter figure) and measures the metric share two ways,
in ABBA order within one process:

* instrumented: ``MetricAccumulator.update`` and ``compute`` timed inside ``evaluate`` (on a GPU each
  timed call is bracketed by a synchronisation, which makes this an upper bound there);
* A/B: ``evaluate`` with the real accumulator against ``evaluate`` with one that does nothing;
  share = 1 - time(no metrics) / time(metrics), per pair.

Both in wall time and in this process's CPU time (steadier on a shared CPU machine). On CUDA it also
counts the host-device synchronisations the metric updates cause (the design keeps metrics on the
device and reads them once per epoch, in ``compute``).

``--semseg-ids argmax`` measures the earlier code instead of the code as it is: class ids from
``logits.argmax(dim=1)`` rather than ``logits.max(dim=1).indices`` (the same ids, first maximum on
ties; max is several times faster on a CPU).

    python bench/validation.py [--height 256 --width 512] [--batch 8] [--rounds 4] [--threads 1] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import warnings
from pathlib import Path
from typing import ClassVar

import torch

import benchlib  # noqa: F401  (puts the repository on the path)
import mtl.train.evaluation
import mtl.train.runtime
from benchlib import (
    SHARED_DATASET,
    abba,
    bench_config,
    build_trainer,
    load_batches,
    median,
    paired_ratios,
    print_header,
    scratch_dir,
    set_threads,
    spread,
)
from mtl.train.metrics import MetricAccumulator

GOAL_SHARE = 0.05


class ArgmaxAccumulator(MetricAccumulator):
    """The earlier variant: class ids by ``argmax(dim=1)`` instead of ``max(dim=1).indices``."""

    def update(self, semseg_logits, semseg_gt, depth_pred_m, depth_gt_m):
        self.update_semseg(semseg_logits.argmax(dim=1), semseg_gt)
        self.update_depth(depth_pred_m, depth_gt_m)


def make_timed_accumulator(base, sync):
    """A subclass of ``base`` that adds the (wall, CPU) seconds of its update/compute calls to ``seconds``."""

    class TimedAccumulator(base):
        seconds: ClassVar[list[float]] = [0.0, 0.0]  # wall, CPU

        def update(self, *args, **kwargs):
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            super().update(*args, **kwargs)
            sync()
            TimedAccumulator.seconds[0] += time.perf_counter() - wall
            TimedAccumulator.seconds[1] += time.process_time() - cpu

        def compute(self):
            wall, cpu = time.perf_counter(), time.process_time()
            result = super().compute()  # reads the device once: synchronises by itself
            TimedAccumulator.seconds[0] += time.perf_counter() - wall
            TimedAccumulator.seconds[1] += time.process_time() - cpu
            return result

    return TimedAccumulator


def make_null_accumulator(template: dict[str, float]):
    """An accumulator that does no work and reports ``template`` (the keys ``evaluate`` expects)."""

    class NullAccumulator:
        def __init__(self, device=None):
            pass

        def update(self, *args, **kwargs):
            pass

        def compute(self):
            return dict(template)

    return NullAccumulator


def count_metric_syncs(batches, outputs_of, device) -> int:
    """Synchronisations raised by ``MetricAccumulator.update`` over ``batches`` (CUDA only)."""
    metrics = MetricAccumulator(device)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in batches:
                semseg, depth_m = outputs_of(batch)
                metrics.update(semseg, batch["semseg"], depth_m, batch["depth"])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=256, help="synthetic image height")
    parser.add_argument("--width", type=int, default=512, help="synthetic image width")
    parser.add_argument("--batch", type=int, default=8, help="validation batch size")
    parser.add_argument("--images", type=int, default=16, help="validation images per evaluate pass (<= 16)")
    parser.add_argument("--rounds", type=int, default=4, help="evaluate passes per side, ABBA order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--semseg-ids", choices=("argmax", "max"), default="max",
                        help="max: the code as it is (max(dim=1).indices); argmax: the earlier argmax(dim=1)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the metric updates, top entries")
    args = parser.parse_args(argv)
    print_header("validation: share of time in metric accumulation", args)
    set_threads(args.threads)

    from mtl.train.evaluation import evaluate
    from mtl.train.runtime import select_device, to_device

    device = select_device(args.device)
    cfg = bench_config(**SHARED_DATASET, synthetic_height=args.height, synthetic_width=args.width,
                       batch_size_validation=args.batch, num_threads=args.threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with scratch_dir("val") as tmp:
        trainer, datasets = build_trainer(cfg, Path(tmp) / "run", device)
        count = max(1, min(args.images, len(datasets["val"])) // args.batch)
        batches = [to_device(b, device, cfg.channels_last)
                   for b in load_batches(datasets["val"], cfg, count, train=False)]
        model, loss_fn, unit = trainer.model, trainer.loss_fn, trainer.depth_unit
        shape = tuple(batches[0]["image"].shape)
        print(f"{count} batches of {shape} on {device}, model {cfg.model_name}")

        accumulator = ArgmaxAccumulator if args.semseg_ids == "argmax" else MetricAccumulator
        timed_cls = make_timed_accumulator(accumulator, sync)
        reference = MetricAccumulator(device)
        reference.update(torch.zeros(1, 19, 2, 2, device=device), torch.zeros(1, 2, 2, dtype=torch.long, device=device),
                         torch.ones(1, 1, 2, 2, device=device) * 10, torch.ones(1, 1, 2, 2, device=device) * 10)
        null_cls = make_null_accumulator(reference.compute())

        def run_evaluate(accumulator_cls) -> tuple[float, float]:
            mtl.train.evaluation.MetricAccumulator = accumulator_cls  # evaluate looks the class up at call time
            try:
                sync()
                wall, cpu = time.perf_counter(), time.process_time()
                evaluate(model, batches, loss_fn, unit, device, cfg)
                sync()
                return time.perf_counter() - wall, time.process_time() - cpu
            finally:
                mtl.train.evaluation.MetricAccumulator = MetricAccumulator

        run_evaluate(accumulator)  # warm-up
        shares: list[tuple[float, float]] = []

        def with_metrics() -> tuple[float, float]:
            timed_cls.seconds = [0.0, 0.0]
            seconds = run_evaluate(timed_cls)
            shares.append((timed_cls.seconds[0] / seconds[0], timed_cls.seconds[1] / seconds[1]))
            return seconds

        real, null = abba(with_metrics, lambda: run_evaluate(null_cls), args.rounds)
        ids_by = "max(dim=1).indices (the code as it is)"
        if args.semseg_ids == "argmax":
            ids_by = "argmax(dim=1) (the earlier code)"
        print(f"class ids by {ids_by}")
        verdicts = []
        for index, clock in ((0, "wall"), (1, "CPU")):
            with_m, without = [t[index] for t in real], [t[index] for t in null]
            instrumented = [100 * s[index] for s in shares]
            ab = [100 * (1 - r) for r in paired_ratios(without, with_m)]
            print(f"{clock:>4} time: evaluate {median(with_m):.3f} s with metrics, {median(without):.3f} s without "
                  f"(medians); metric share instrumented {spread(instrumented)} %, A/B {spread(ab)} %")
            verdicts.append(median(instrumented))
        verdict = "met" if max(verdicts) <= 100 * GOAL_SHARE else "MISSED"
        print(f"goal share <= {100 * GOAL_SHARE:.0f}%: {verdict} (instrumented, wall {verdicts[0]:.2f}%, "
              f"CPU {verdicts[1]:.2f}%)")

        def outputs_of(batch):
            with torch.no_grad(), mtl.train.runtime.autocast(cfg, device):
                outputs = model(batch["image"])
            return outputs["semseg"], unit.decode(outputs["depth"].float())

        if device.type == "cuda":
            syncs = count_metric_syncs(batches, outputs_of, device)
            print(f"host-device synchronisations in {len(batches)} metric updates: {syncs} "
                  f"(the design wants 0; compute() reads the device once per epoch)")
        else:
            print("synchronisation count: needs CUDA (on a CPU every operation is synchronous)")

        if args.profile:
            model.eval()
            prepared = [(outputs_of(b), b) for b in batches]
            profiler = cProfile.Profile()
            metrics = accumulator(device)
            profiler.enable()
            for (semseg, depth_m), batch in prepared:
                metrics.update(semseg, batch["semseg"], depth_m, batch["depth"])
            metrics.compute()
            profiler.disable()
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(10)
            print("cProfile of the metric updates, by own time:")
            print("\n".join(stream.getvalue().splitlines()[4:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
