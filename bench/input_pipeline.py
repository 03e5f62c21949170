"""Input pipeline: images/s the data loader delivers against images/s the training step consumes.

On a synthetic dataset of ``--height`` x ``--width`` images (default 256x512, MiniScapes' size) with the
``full`` profile's training crop and batch (crop 256, batch 4), measured in one process:

1. per-image cost in the main process (one core, no loader): decoding the three files alone, decoding
   plus the default augmentation (the template's: a random crop, no scale/tilt/wiggle/flip), and
   decoding plus every geometric augmentation of ``problem4.augmentation`` (scale 0.5-2, tilt 10 deg,
   wiggle 0.05, flip), in rotating order;
2. the engine's ``make_loader`` at each ``--workers`` count (default: 0, 1, 2 and 16, the config
   default), steady-state images/s: one long pass over several epochs of (epoch, position) items, so
   workers start once, timed after each worker has delivered its first batch (the start-up, paid
   once per epoch when ``persistent_workers`` is off, is printed separately);
3. the training step (``Trainer.train_step``, the real model) at that crop and batch, images/s,
   interleaved with (2).

Figures: loader/step ratio per worker count (goal >= 1.5 at the default count), the fewest workers that
reach 1.5 here, augmentation cost over plain decoding, and what a host with more cores would get from
the measured per-worker rate (an extrapolation, printed as such).

    python bench/input_pipeline.py [--height 256 --width 512] [--crop 256] [--batch 4] [--workers 0,1,2,16]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import torch

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import (
    SHARED_DATASET,
    bench_config,
    build_trainer,
    load_batches,
    median,
    print_header,
    scratch_dir,
    set_threads,
    timed,
    usable_cores,
)

GOAL_RATIO = 1.5
ALL_AUGMENTATION = {"aug_geom_scale_min": 0.5, "aug_geom_scale_max": 2.0, "aug_geom_tilt_max_deg": 10.0,
                    "aug_geom_wiggle_max_ratio": 0.05, "aug_geom_reflect": True}


def per_image_seconds(dataset, count: int, epoch: int, decode_only: bool) -> float:
    """Mean seconds per image over ``count`` images: ``dataset.load`` alone, or the full ``__getitem__``."""
    start = time.perf_counter()
    for position in range(count):
        if decode_only:
            dataset.load(dataset.indices[position % len(dataset)])
        else:
            dataset[(epoch, position % len(dataset))]
    return (time.perf_counter() - start) / count


class EpochsSampler(torch.utils.data.Sampler):
    """``(epoch, position)`` items of ``epochs`` consecutive epochs, each in the engine's per-epoch order."""

    def __init__(self, length: int, seed: int, first_epoch: int, epochs: int):
        from mtl.data.loading import EpochSampler

        self.items = []
        for epoch in range(first_epoch, first_epoch + epochs):
            sampler = EpochSampler(length, seed)
            sampler.set_epoch(epoch)
            self.items += list(sampler)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def loader_rate(dataset, cfg, workers: int, batches: int, epoch: int) -> tuple[float, float]:
    """(seconds to the first batch, steady images/s over ``batches`` batches) of the engine's loader."""
    from mtl.data.loading import make_loader

    skip = max(1, workers)  # each worker's first batch carries its start-up
    needed = (skip + batches) * cfg.batch_size
    sampler = EpochsSampler(len(dataset), cfg.seed, epoch, math.ceil(needed / len(dataset)) + 1)
    loader = make_loader(dataset, cfg.replace(workers=workers), train=True, sampler=sampler)
    start = time.perf_counter()
    first = timed_start = None
    for count, _batch in enumerate(loader, start=1):
        if count == 1:
            first = time.perf_counter() - start
        if count == skip:
            timed_start = time.perf_counter()
        elif count == skip + batches:
            return first, batches * cfg.batch_size / (time.perf_counter() - timed_start)
    raise RuntimeError("the loader ended before the timed window did")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=256, help="synthetic image height")
    parser.add_argument("--width", type=int, default=512, help="synthetic image width")
    parser.add_argument("--crop", type=int, default=256, help="training crop side")
    parser.add_argument("--batch", type=int, default=4, help="training batch size")
    parser.add_argument("--workers", default="0,1,2,16", help="comma list of loader worker counts to measure")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per loader measurement")
    parser.add_argument("--steps", type=int, default=2, help="training steps timed per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (step, loaders) and of per-image costs")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training step")
    parser.add_argument("--gpu-rate", default="",
                        help="comma list of images/s a GPU step consumes (e.g. from gpu_throughput.py): prints the "
                             "workers each needs at the measured per-worker rate")
    args = parser.parse_args(argv)
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    print_header("input pipeline: loader images/s vs training-step images/s", args)
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")  # we ask for more on purpose
    set_threads(args.threads)

    cfg = bench_config(**SHARED_DATASET, synthetic_height=args.height, synthetic_width=args.width,
                       aug_input_crop_size=args.crop,
                       batch_size=args.batch, num_threads=args.threads)
    default_workers = type(cfg).model_fields["workers"].default
    start = time.perf_counter()
    with scratch_dir("input") as tmp:
        trainer, datasets = build_trainer(cfg, Path(tmp) / "run")
        print(f"dataset {datasets['train'].root} ready in {time.perf_counter() - start:.1f} s "
              f"({len(datasets['train'])} training images)")
        from mtl.data import build_datasets

        dataset = datasets["train"]
        augmented_all = build_datasets(cfg.replace(**ALL_AUGMENTATION))["train"]
        count = min(len(dataset), 32)

        # 1. Per-image costs on one core, in rotating order.
        costs: dict[str, list[float]] = {"decode": [], "decode + default aug": [], "decode + all geometric aug": []}
        measures = [("decode", lambda e: per_image_seconds(dataset, count, e, decode_only=True)),
                    ("decode + default aug", lambda e: per_image_seconds(dataset, count, e, decode_only=False)),
                    ("decode + all geometric aug", lambda e: per_image_seconds(augmented_all, count, e, False))]
        for round_ in range(2 * args.rounds):
            order = measures if round_ % 2 == 0 else measures[::-1]
            for name, measure in order:
                costs[name].append(measure(round_))
        decode_s = median(costs["decode"])
        print(f"per image, main process, {count} images x {2 * args.rounds} passes (median):")
        for name, values in costs.items():
            seconds = median(values)
            print(f"  {name:<28} {1000 * seconds:7.2f} ms = {1 / seconds:7.1f} images/s per worker   "
                  f"x{seconds / decode_s:.2f} of decoding")
        per_worker = 1 / median(costs["decode + default aug"])

        # 2 + 3. Training step and loaders, interleaved per round.
        batches = load_batches(dataset, cfg, args.steps)
        trainer.model.train()
        trainer.train_step(batches[0])  # warm-up
        step_rates: list[float] = []
        rates: dict[int, list[float]] = {w: [] for w in worker_counts}
        firsts: dict[int, list[float]] = {w: [] for w in worker_counts}
        for round_ in range(args.rounds):
            order = worker_counts if round_ % 2 == 0 else worker_counts[::-1]
            if round_ % 2 == 0:
                step_rates.append(args.steps * args.batch / timed(lambda: [trainer.train_step(b) for b in batches]))
            for workers in order:
                first, rate = loader_rate(dataset, cfg, workers, args.batches, epoch=100 * round_)
                firsts[workers].append(first)
                rates[workers].append(rate)
            if round_ % 2 == 1:
                step_rates.append(args.steps * args.batch / timed(lambda: [trainer.train_step(b) for b in batches]))
        step_rate = median(step_rates)
        print(f"training step (crop {args.crop}, batch {args.batch}, {args.threads} thread(s)): "
              f"{step_rate:.2f} images/s (median of {len(step_rates)} x {args.steps} steps)")
        print("loader (engine make_loader, default augmentation), steady-state images/s:")
        reaching = None
        for workers in worker_counts:
            rate = median(rates[workers])
            ratio = rate / step_rate
            mark = " (config default)" if workers == default_workers else ""
            print(f"  workers {workers:>2}{mark:<17} {rate:8.1f} images/s, first batch after "
                  f"{median(firsts[workers]):.2f} s (start-up), loader/step ratio {ratio:8.1f}")
            if ratio >= GOAL_RATIO and (reaching is None or workers < reaching):
                reaching = workers
        if default_workers in rates:
            ratio = median(rates[default_workers]) / step_rate
            print(f"goal loader/step >= {GOAL_RATIO} at the default {default_workers} workers: "
                  f"{'met' if ratio >= GOAL_RATIO else 'MISSED'} ({ratio:.1f})")
        print(f"fewest measured workers reaching {GOAL_RATIO} here: {reaching if reaching is not None else 'none'}")

        cores = usable_cores()
        per_worker_all = 1 / median(costs["decode + all geometric aug"])
        print(f"per-worker rate (one core): {per_worker:.1f} images/s with the default augmentation, "
              f"{per_worker_all:.1f} with every geometric augmentation; this machine has {cores} cores, so its "
              f"loader tops out near {cores * per_worker:.0f} images/s")
        print(f"extrapolation, not measured: a 16-core host with 15 loader workers would deliver about "
              f"{15 * per_worker:.0f} images/s ({15 * per_worker_all:.0f} with every geometric augmentation) "
              f"if decoding scales per core at this core's speed")
        for text in [t for t in args.gpu_rate.split(",") if t.strip()]:
            consumed = float(text)
            print(f"  a GPU step consuming {consumed:.0f} images/s needs "
                  f"{math.ceil(GOAL_RATIO * consumed / per_worker)} workers for a ratio of {GOAL_RATIO} "
                  f"({math.ceil(GOAL_RATIO * consumed / per_worker_all)} with every geometric augmentation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
