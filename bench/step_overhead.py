"""Overhead of the engine's training loop over a bare PyTorch loop on the same model and batches.

The engine side is the real ``Trainer.train_epoch``: to_device, autocast, ``MultiTaskLoss`` weighting,
on-device loss sums, a point every 10 steps to the local trace (a plain append: the trace is fsync'ed
only before each checkpoint) and to the
W&B sink (disabled here: W&B's own cost is not the engine's), the progress display (plain lines, sent to
/dev/null) and the checkpoint/stop checks. The bare side is forward, the same two losses written out by
hand, backward and step. Both share one model, one optimizer and the same in-memory batches (real
synthetic samples through the engine's loader), and run in blocks of ``--steps`` steps in ABBA order;
the figure is the engine/bare time ratio, per pair of blocks, in wall time and in this process's CPU
time (steadier on a shared machine; wall time also counts the trace's fsync). Goal: ratio <= 1.05.

``--tiny-model`` swaps the network for two small convolutions (a step of a few milliseconds), which
exposes the engine's fixed cost per step: the worst case, and the figure that carries over to a fast GPU.
``--fsync-ms 5`` makes every fsync of this process take 5 ms longer (``os.fsync`` wrapped here, no hook in
the code under test), standing in for a network filesystem; the checkpoint is not part of the blocks.

    python bench/step_overhead.py [--crop 64] [--batch 4] [--steps 10] [--rounds 8] [--threads 1]
                                  [--tiny-model] [--fsync-ms 5] [--control] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import io
import os
import pstats
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import (
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
    timed_wall_cpu,
)

GOAL_RATIO = 1.05


class TinyMultiTask(torch.nn.Module):
    """A 3x3 convolution and a 1x1 head per task: the same outputs as the real models, at a tiny cost."""

    def __init__(self, classes: int = 19, width: int = 16):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.BatchNorm2d(width),
                                        torch.nn.ReLU())
        self.semseg = torch.nn.Conv2d(width, classes, 1)
        self.depth = torch.nn.Conv2d(width, 1, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(image)
        return {"semseg": self.semseg(features), "depth": self.depth(features)}


def bare_step(model, optimizer, batch, depth_mean: float, depth_std: float, weights: tuple[float, float]):
    """What a hand-written loop does: forward, cross-entropy + masked L2 on standardised depth, backward, step."""
    outputs = model(batch["image"])
    loss_semseg = F.cross_entropy(outputs["semseg"].float(), batch["semseg"], ignore_index=255)
    valid = (batch["depth"] > 0).float()
    target = (batch["depth"] - depth_mean) / depth_std
    loss_depth = ((outputs["depth"].float() - target).square() * valid).sum() / valid.sum().clamp_min(1.0)
    total = weights[0] * loss_semseg + weights[1] * loss_depth
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return total.detach()


def slow_fsync(delay_s: float) -> None:
    """Every ``os.fsync`` of this process sleeps ``delay_s`` first: the cost of a slow filesystem."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        time.sleep(delay_s)
        real_fsync(fd)

    os.fsync = fsync


def bookkeeping_per_step(trainer, batch, repeats: int = 2000, points: int = 50) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per training step of each piece ``train_epoch`` adds around ``train_step``, each
    timed alone over many repetitions (steady figures even on a loaded machine)."""
    from mtl.train.loop import TRAIN_LOG_INTERVAL
    from mtl.train.runtime import to_device

    total, losses = trainer.train_step(batch)
    sums = torch.zeros(3, dtype=torch.float64)
    point = {"step": 10, "epoch": 1, "time": 1.0, "train/loss": 1.0, "train/loss_semseg": 1.0,
             "train/loss_depth": 1.0, "train/lr": 0.01}

    def accumulate() -> None:
        nonlocal sums
        sums += torch.stack([total.double(), losses["semseg"].double(), losses["depth"].double()])

    def log_point() -> None:
        (sums / 10).tolist()
        with contextlib.redirect_stdout(io.StringIO()):
            for hook in trainer.hooks:  # trace, W&B, progress (and its rate-limited status record)
                hook.after_train_point(trainer, point)

    pieces = {"to_device": (lambda: to_device(batch, trainer.device, trainer.cfg.channels_last), repeats, 1),
              "loss sums": (accumulate, repeats, 1),
              f"trace point (1 in {TRAIN_LOG_INTERVAL} steps)": (log_point, points, TRAIN_LOG_INTERVAL)}
    costs = {}
    for name, (fn, count, every) in pieces.items():
        wall, cpu = timed_wall_cpu(lambda: [fn() for _ in range(count)])  # noqa: B023
        costs[name] = (wall / count / every, cpu / count / every)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=64, help="training crop side (multiple of 32)")
    parser.add_argument("--batch", type=int, default=4, help="batch size")
    parser.add_argument("--steps", type=int, default=10, help="steps per block (10 = one trace point per block)")
    parser.add_argument("--rounds", type=int, default=8, help="blocks per side, in ABBA order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--tiny-model", action="store_true", help="two small convolutions instead of the network")
    parser.add_argument("--control", action="store_true",
                        help="A/A control: the bare loop on both sides, to show the noise floor of the ratio")
    parser.add_argument("--profile", action="store_true", help="also cProfile one engine block, top entries")
    parser.add_argument("--fsync-ms", type=float, default=0.0,
                        help="add this many milliseconds to every fsync (a slow network filesystem)")
    args = parser.parse_args(argv)
    if args.fsync_ms:
        slow_fsync(args.fsync_ms / 1000)
    print_header("training step: engine loop vs bare PyTorch loop", args)
    set_threads(args.threads)

    cfg = bench_config(aug_input_crop_size=args.crop, batch_size=args.batch, synthetic_num_train=max(8, args.batch),
                       synthetic_num_val=4, synthetic_num_test=4, progress="plain", num_threads=args.threads)
    with scratch_dir("step") as tmp:
        trainer, datasets = build_trainer(cfg, Path(tmp) / "run")
        batches = load_batches(datasets["train"], cfg, args.steps)
        from mtl.train.optim import build_optimizer

        if args.tiny_model:
            torch.manual_seed(cfg.seed)
            trainer.model = TinyMultiTask()
            trainer.optimizer = build_optimizer(cfg, trainer.model)

        model, optimizer = trainer.model, trainer.optimizer
        unit = trainer.depth_unit
        if unit.unit != "meters":
            raise SystemExit(f"the bare loop writes the metres depth target by hand; got depth unit {unit.unit!r}")
        weights = (cfg.loss_weight_semseg, cfg.loss_weight_depth)

        # Same work on both sides: from one state, one engine step and one bare step give the same loss.
        saved = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
        model.train()
        engine_loss, _ = trainer.train_step(batches[0])
        model.load_state_dict(saved[0]), optimizer.load_state_dict(saved[1])
        bare_loss = bare_step(model, optimizer, batches[0], unit.mean, unit.std, weights)
        model.load_state_dict(saved[0]), optimizer.load_state_dict(saved[1])
        print(f"same first-step loss: engine {engine_loss.item():.6f}, bare {bare_loss.item():.6f}")
        if not torch.allclose(engine_loss, bare_loss, rtol=1e-5, atol=1e-6):
            raise SystemExit("the engine and the bare loop compute different losses; the comparison would be unfair")

        sink = io.StringIO()
        trainer.batches = len(batches)

        def engine_block() -> None:
            trainer.position.batch_in_epoch = 0
            with contextlib.redirect_stdout(sink):
                trainer.train_epoch(batches)
            sink.seek(0), sink.truncate()

        def bare_block() -> None:
            model.train()
            for batch in batches:
                bare_step(model, optimizer, batch, unit.mean, unit.std, weights)

        engine_block(), bare_block()  # warm-up: allocator, first-call costs
        first_side = bare_block if args.control else engine_block
        if args.control:
            print("control run: the bare loop on both sides (any ratio away from 1 is noise or order effect)")
        engine, bare = abba(lambda: timed_wall_cpu(first_side), lambda: timed_wall_cpu(bare_block), args.rounds)
        points = len(trainer.trace.path.read_text().splitlines())

        model_name = "tiny two-convolution model" if args.tiny_model else cfg.model_name
        print(f"blocks: {args.rounds} per side x {args.steps} steps, {model_name}, crop {args.crop}, "
              f"batch {args.batch}; {points} trace points written")
        verdicts = []
        for index, clock_name in ((0, "wall"), (1, "CPU")):
            engine_times, bare_times = [t[index] for t in engine], [t[index] for t in bare]
            ratios = paired_ratios(engine_times, bare_times)
            extra_ms = 1000 * (sum(engine_times) - sum(bare_times)) / (args.steps * args.rounds)
            fastest = min(engine_times) / min(bare_times)
            print(f"{clock_name:>4} time: engine step {1000 * median(engine_times) / args.steps:8.2f} ms, bare step "
                  f"{1000 * median(bare_times) / args.steps:8.2f} ms (medians); engine/bare per pair {spread(ratios)}, "
                  f"total {sum(engine_times) / sum(bare_times):.3f}, fastest blocks {fastest:.3f}; "
                  f"engine cost {extra_ms:+.3f} ms per step")
            verdicts.append(sum(engine_times) / sum(bare_times))
        verdict = "met" if max(verdicts) <= GOAL_RATIO else "MISSED"
        print(f"goal ratio <= {GOAL_RATIO}: {verdict} (total ratio wall {verdicts[0]:.3f}, CPU {verdicts[1]:.3f}; "
              f"compare with --control for this machine's noise floor)")

        costs = bookkeeping_per_step(trainer, batches[0])
        print("engine bookkeeping per step, each piece timed alone:")
        for name, (wall, cpu) in costs.items():
            print(f"  {name:<40} {1e6 * wall:8.1f} us wall {1e6 * cpu:8.1f} us CPU")
        wall = sum(w for w, _ in costs.values())
        bare_step_s = min(t[0] for t in bare) / args.steps
        print(f"  total {1e6 * wall:.0f} us wall per step = {100 * wall / bare_step_s:.2f}% of the fastest bare step "
              f"here; {100 * wall / 0.030:.1f}% of a 30 ms step, {100 * wall / 0.010:.1f}% of a 10 ms step")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            engine_block()
            profiler.disable()
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(15)
            print("cProfile of one engine block, by own time:")
            print("\n".join(stream.getvalue().splitlines()[4:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
