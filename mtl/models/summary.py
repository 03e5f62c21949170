"""Parameter and FLOP counts of the architectures, as a dict per config or a Markdown table.

``python -m mtl.models.summary --height 256 --width 512`` prints the table for the main variants.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtl.config import Config, make_config
from mtl.models.registry import build_model


def model_summary(cfg: Config, height: int, width: int) -> dict:
    """Trainable parameters and forward FLOPs (batch 1, eval mode, no grad) of ``cfg``'s model.

    The model is built on the CPU with a random encoder (``pretrained`` is ignored: weights change no
    count) and leaves the global random state untouched. FLOPs count a multiply-add as two.
    """
    _check_size(height, width)  # before building the model, which count_model checks again: a bad size costs nothing
    # A private RNG state: building the model draws random weights, and a caller's training run must
    # not see a different random stream just because it asked for a summary.
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg.replace(pretrained=False))
    return count_model(model, height, width)


def count_model(model: torch.nn.Module, height: int, width: int) -> dict:
    """model_summary's counts of a model already built (a training's own: building a second ResNet-34 to count
    it took a fifth of a second). One forward in eval mode without gradients, on the model's device, changes
    no weight, buffer or random state; the model's mode is restored."""
    _check_size(height, width)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    device = next(model.parameters()).device
    training = model.training
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model.eval()(torch.zeros(1, 3, height, width, device=device))
    finally:
        model.train(training)
    flops = int(counter.get_total_flops())
    return {"params": params, "flops": flops, "gflops": flops / 1e9}


def _check_size(height: int, width: int) -> None:
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive multiples of 32, got {height}x{width}")


def summary_table(configs: dict[str, Config], height: int, width: int) -> str:
    """A Markdown table (variant, model, output stride, parameters in millions, GFLOPs) of ``configs``."""
    lines = [
        f"| variant ({height}x{width}) | model | output stride | params (M) | GFLOPs |",
        "|---|---|---:|---:|---:|",
    ]
    for name, cfg in configs.items():
        summary = model_summary(cfg, height, width)
        params_m = summary["params"] / 1e6
        lines.append(f"| {name} | {cfg.model_name} | {cfg.output_stride} | {params_m:.2f} | {summary['gflops']:.2f} |")
    return "\n".join(lines)


def standard_configs() -> dict[str, Config]:
    """The variants the questions compare: template baseline, ASPP + skip, branched, distillation, SE + all skips."""
    strong = {"aspp": True, "decoder_skip": True, "dilation_layer4": True}
    return {
        "joint (baseline)": make_config({}),
        "joint + ASPP + skip": make_config(strong),
        "branched": make_config({**strong, "model_name": "branched"}),
        "distillation": make_config({**strong, "model_name": "distillation"}),
        "distillation improved": make_config(
            {**strong, "model_name": "distillation", "distillation_decoder": "improved"}
        ),
        "joint + SE + 2x/1x skips": make_config(
            {**strong, "decoder_se": True, "decoder_skip_2x": True, "decoder_skip_1x": True}
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Parameters and FLOPs of the mtl-ablate architectures.")
    parser.add_argument("--height", type=int, default=256, help="Input height (multiple of 32).")
    parser.add_argument("--width", type=int, default=512, help="Input width (multiple of 32).")
    args = parser.parse_args(argv)
    print(summary_table(standard_configs(), args.height, args.width))


if __name__ == "__main__":
    main()
