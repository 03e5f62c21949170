"""Cost of a training step under each loss-weighting method (config key ``loss_weighting``), as a ratio to
``fixed`` measured in one run.

Each method gets its own real engine Trainer (``Trainer.train_step``: forward, the task losses, the method's
backward, the optimizer step) on the same in-memory batches (real synthetic samples through the engine's
loader), built from the same seed. The methods take turns in blocks of ``--steps`` steps, the order rotated
every round, so load from other processes and clock drift hit each alike; each round gives every method a
ratio to the ``fixed`` block of that round, in wall time and in this process's CPU time (steadier on a shared
machine). The figure is the median ratio over the rounds, with its range.

    python bench/weighting_cost.py [--model deeplabv3p|branched] [--crop 128] [--batch 4] [--steps 4]
                                   [--rounds 6] [--threads 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import (
    bench_config,
    build_trainer,
    load_batches,
    median,
    print_header,
    scratch_dir,
    set_threads,
    spread,
    timed_wall_cpu,
)

METHODS = ("fixed", "uncertainty", "dwa", "pcgrad")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplabv3p", choices=("deeplabv3p", "branched"), help="architecture")
    parser.add_argument("--crop", type=int, default=128, help="training crop side (the quick profile's 128)")
    parser.add_argument("--batch", type=int, default=4, help="batch size")
    parser.add_argument("--steps", type=int, default=4, help="training steps per block")
    parser.add_argument("--rounds", type=int, default=6, help="blocks per method")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    print_header("training step per loss-weighting method, ratio to fixed", args)
    set_threads(args.threads)
    with scratch_dir("weighting") as scratch:
        trainers, batches = {}, None
        for method in METHODS:
            cfg = bench_config(loss_weighting=method, model_name=args.model, aug_input_crop_size=args.crop,
                               batch_size=args.batch, synthetic_num_train=max(8, args.batch * args.steps),
                               synthetic_num_val=4, synthetic_num_test=4)
            trainers[method], datasets = build_trainer(cfg, Path(scratch) / method)
            trainers[method].model.train()
            batches = batches or load_batches(datasets["train"], cfg, args.steps)
        for trainer in trainers.values():
            trainer.train_step(batches[0])  # warm-up: first-call allocations
        times: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
        for round_index in range(args.rounds):
            order = METHODS[round_index % len(METHODS):] + METHODS[:round_index % len(METHODS)]
            for method in order:
                trainer = trainers[method]
                times[method].append(timed_wall_cpu(lambda t=trainer: [t.train_step(b) for b in batches]))
    print(f"blocks: {args.rounds} per method x {args.steps} steps, {args.model}, crop {args.crop}, batch {args.batch}")
    print(f"{'method':<12} {'wall ms/step':>12} {'CPU ms/step':>12}   ratio to fixed: wall, CPU (median [min..max])")
    for method in METHODS:
        wall = [w for w, _ in times[method]]
        cpu = [c for _, c in times[method]]
        wall_ratio = [w / f for (w, _), (f, _) in zip(times[method], times["fixed"])]
        cpu_ratio = [c / f for (_, c), (_, f) in zip(times[method], times["fixed"])]
        print(f"{method:<12} {1000 * median(wall) / args.steps:12.1f} {1000 * median(cpu) / args.steps:12.1f}   "
              f"{spread(wall_ratio)}, {spread(cpu_ratio)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
