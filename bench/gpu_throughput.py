"""GPU training throughput at 256x512, batch 8: fp32, bf16, bf16 + channels_last, and + torch.compile.

Each variant is the engine's own training step (``Trainer.train_step``: autocast, losses, backward,
optimizer step) with the config switches ``amp``, ``channels_last`` and ``compile`` applied the way
``mtl-train`` applies them, on real synthetic 256x512 images with labels. Printed per variant: images/s,
achieved TFLOP/s (forward FLOPs from ``mtl.models.model_summary``, x3 for forward + backward) and that
as a share of the device's dense peak (from a table of datasheet figures, or ``--peak-tflops``), plus
the speed-up over fp32 measured in the same process. Needs CUDA: without it the script says so and
exits 0 (``--device cpu`` runs the same code on the CPU as a smoke check; its figures mean nothing
for a GPU).

    python bench/gpu_throughput.py [--batch 8] [--steps 20] [--warmup 5] [--variants fp32,bf16,bf16+cl,bf16+cl+compile]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import benchlib  # noqa: F401  (puts the repository on the path)
import torch

from benchlib import SHARED_DATASET, bench_config, build_trainer, load_batches, print_header, scratch_dir

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


def measure(variant: str, base: dict, device: torch.device, args, tmp: Path) -> dict:
    from mtl.engine import to_device

    cfg = bench_config(**{**base, **VARIANTS[variant]})
    trainer, datasets = build_trainer(cfg, tmp / variant, device)
    if cfg.compile:
        trainer.model = torch.compile(trainer.model)  # as mtl-train does, after the model is placed
    val_cfg = cfg.replace(batch_size_validation=args.batch)
    batches = [to_device(b, device, cfg.channels_last) for b in load_batches(datasets["val"], val_cfg, 2, train=False)]
    shape = tuple(batches[0]["image"].shape)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    trainer.model.train()
    start = time.perf_counter()
    for i in range(args.warmup):
        trainer.train_step(batches[i % len(batches)])
    sync()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.steps):
        trainer.train_step(batches[i % len(batches)])
    sync()
    seconds = time.perf_counter() - start
    return {"variant": variant, "images_per_s": args.steps * shape[0] / seconds, "warmup_s": warmup,
            "shape": shape, "cfg": cfg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=256, help="image height (synthetic dataset)")
    parser.add_argument("--width", type=int, default=512, help="image width (synthetic dataset)")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
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
    tf32 = torch.backends.cudnn.allow_tf32
    print(f"device {name}; {flops_per_image / 1e9:.1f} GFLOP per image (forward x3); "
          f"peaks {peaks if peaks else 'unknown (give --peak-tflops)'}; cudnn TF32 {'on' if tf32 else 'off'}")

    results = []
    with scratch_dir("gpu") as tmp:
        for variant in variants:
            result = measure(variant, base, device, args, Path(tmp))
            results.append(result)
            del result["cfg"]
            if device.type == "cuda":
                torch.cuda.empty_cache()
    reference = next((r["images_per_s"] for r in results if r["variant"] == "fp32"), None)
    print("| variant | images/s | TFLOP/s | share of peak | vs fp32 | warm-up s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        tflops = r["images_per_s"] * flops_per_image / 1e12
        kind = "bf16" if r["variant"].startswith("bf16") else ("tf32" if tf32 else "fp32")
        peak = peaks.get(kind) if peaks else None
        share = f"{100 * tflops / peak:.1f}% of {kind} {peak:.0f}" if peak else "-"
        speedup = f"{r['images_per_s'] / reference:.2f}x" if reference else "-"
        print(f"| {r['variant']} | {r['images_per_s']:.1f} | {tflops:.1f} | {share} | {speedup} | {r['warmup_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
