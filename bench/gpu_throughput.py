"""GPU training throughput at 256x512, batch 8: fp32, bf16, bf16 + channels_last, and + torch.compile.

Each variant is the engine's own training step (``Trainer.train_step``: autocast, losses, backward,
optimizer step) with the config switches ``amp``, ``channels_last`` and ``compile`` applied the way
``mtl-train`` applies them, on real synthetic 256x512 images with labels. Printed per variant: images/s,
achieved TFLOP/s (forward FLOPs from ``mtl.models.model_summary``, x3 for forward + backward) and that
as a share of the device's dense peak (from a table of datasheet figures, or ``--peak-tflops``), the
speed-up over fp32, and peak GPU memory (what the variant allocates, measured over its warm-up). All
variants are set up and warmed up first, then take turns for ``--rounds`` rounds (order reversed every
round), so drift during the run hits each alike. Needs CUDA: without it the
script says so and exits 0 (``--device cpu`` runs the same code on the CPU as a smoke check; its figures
mean nothing for a GPU).

    python bench/gpu_throughput.py [--batch 8] [--steps 10] [--rounds 4] [--warmup 5] [--variants fp32,bf16,...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import (
    SHARED_DATASET,
    bench_config,
    build_trainer,
    load_batches,
    median,
    paired_ratios,
    print_header,
    scratch_dir,
)

VARIANTS = {
    "fp32": {"amp": "none", "channels_last": False, "compile": False},
    "bf16": {"amp": "bf16", "channels_last": False, "compile": False},
    "bf16+cl": {"amp": "bf16", "channels_last": True, "compile": False},
    "bf16+cl+compile": {"amp": "bf16", "channels_last": True, "compile": True},
}

# Dense (no sparsity) datasheet peaks in TFLOP/s: bf16 tensor cores, tf32 tensor cores, plain fp32.
# Matched in order on the CUDA device name; anything else needs --peak-tflops.
PEAKS = [
    ("H200", {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L4", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
]


def device_peaks(name: str) -> dict[str, float] | None:
    for key, peaks in PEAKS:
        if all(part in name for part in key.split()):
            return peaks
    return None


def parse_sets(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE (a config key)")
        key, value = item.split("=", 1)
        values[key] = value
    return values


class Variant:
    """One configured trainer with its batches on the device, warmed up (compiled, autotuned) once."""

    def __init__(self, name: str, base: dict, device: torch.device, args, tmp: Path):
        from mtl.train.runtime import to_device

        self.name = name
        cuda = device.type == "cuda"
        if cuda:  # this variant's own peak: what it allocates from here on (weights, optimizer, activations)
            torch.cuda.synchronize()
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        cfg = bench_config(**{**base, **VARIANTS[name]})
        self.trainer, datasets = build_trainer(cfg, tmp / name, device)
        if cfg.compile:
            self.trainer.model = torch.compile(self.trainer.model)  # as mtl-train does, after the model is placed
        val_cfg = cfg.replace(batch_size_validation=args.batch)
        self.batches = [to_device(b, device, cfg.channels_last)
                        for b in load_batches(datasets["val"], val_cfg, 2, train=False)]
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.trainer.model.train()
        self.warmup_s = self.run(args.warmup)
        self.peak_gib = (torch.cuda.max_memory_allocated() - resident) / 2**30 if cuda else float("nan")
        self.rates: list[float] = []

    def run(self, steps: int) -> float:
        self.sync()
        start = time.perf_counter()
        for i in range(steps):
            self.trainer.train_step(self.batches[i % len(self.batches)])
        self.sync()
        return time.perf_counter() - start

    def timed_round(self, steps: int) -> None:
        self.rates.append(steps * self.batches[0]["image"].shape[0] / self.run(steps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=256, help="image height (synthetic dataset)")
    parser.add_argument("--width", type=int, default=512, help="image width (synthetic dataset)")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds over all variants, order reversed every round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke check")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device, TFLOP/s")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config key for every variant, e.g. --set aspp=true (repeatable)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA GPU is available on this machine; nothing measured.")
        return 0
    print_header("GPU training throughput by device option", args)

    base = {**SHARED_DATASET, "synthetic_height": args.height, "synthetic_width": args.width,
            "batch_size_validation": args.batch, **parse_sets(args.set)}
    from mtl.models import model_summary

    flops_per_image = 3 * model_summary(bench_config(**base), args.height, args.width)["flops"]
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    peaks = device_peaks(name) if device.type == "cuda" else None
    if args.peak_tflops is not None:
        peaks = {"bf16": args.peak_tflops, "tf32": None, "fp32": None}
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    print(f"device {name}; {flops_per_image / 1e9:.1f} GFLOP per image (forward x3); "
          f"peaks {peaks if peaks else 'unknown (give --peak-tflops)'}"
          + (f"; cudnn TF32 {'on' if tf32 else 'off'}" if device.type == "cuda" else ""))

    with scratch_dir("gpu") as tmp:
        # All variants stay alive and take turns, so drift over the run hits each alike.
        prepared = [Variant(v, base, device, args, Path(tmp)) for v in variants]
        for round_ in range(args.rounds):
            for variant in prepared if round_ % 2 == 0 else prepared[::-1]:
                variant.timed_round(args.steps)
    reference = next((v for v in prepared if v.name == "fp32"), None)
    print(f"{args.rounds} rounds x {args.steps} steps per variant, batch {args.batch}, {args.height}x{args.width}; "
          "images/s is the median over rounds, 'vs fp32' the median of per-round ratios")
    print("| variant | images/s | TFLOP/s | share of peak | vs fp32 | peak GiB | warm-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v in prepared:
        rate = median(v.rates)
        tflops = rate * flops_per_image / 1e12
        kind = "bf16" if v.name.startswith("bf16") else ("tf32" if tf32 else "fp32")
        peak = peaks.get(kind) if peaks else None
        share = f"{100 * tflops / peak:.1f}% of {kind} {peak:.0f}" if peak else "-"
        speedup = f"{median(paired_ratios(v.rates, reference.rates)):.2f}x" if reference else "-"
        print(f"| {v.name} | {rate:.1f} | {tflops:.3g} | {share} | {speedup} | {v.peak_gib:.2f} | {v.warmup_s:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
