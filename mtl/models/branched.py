"""Branched multi-task DeepLabV3+: a shared encoder, then a task-specific ASPP and decoder per task."""

from __future__ import annotations

from torch import Tensor, nn

from mtl.config import Config
from mtl.models.heads import (
    TASK_CHANNELS,
    build_aspp,
    build_decoder,
    encoder_from_config,
    pyramid_with_image,
    skip_channels,
)
from mtl.models.parts import resize_to
from mtl.models.registry import register_model


class TaskBranch(nn.Module):
    """One task's ASPP + decoder on the shared encoder's pyramid; returns (predictions, features)."""

    def __init__(self, cfg: Config, bottleneck_channels: int, skips: dict[int, int], num_outputs: int) -> None:
        super().__init__()
        self.aspp = build_aspp(cfg, bottleneck_channels)
        self.decoder = build_decoder(cfg, cfg.aspp_channels, skips, num_outputs)

    @property
    def output_scale(self) -> int:
        return self.decoder.output_scale

    @property
    def out_feature_channels(self) -> int:
        return self.decoder.out_feature_channels

    def forward(self, bottleneck: Tensor, pyramid: dict[int, Tensor]) -> tuple[Tensor, Tensor]:
        return self.decoder(self.aspp(bottleneck), pyramid)


@register_model("branched")
class BranchedDeepLabV3p(nn.Module):
    """A branch (attribute ``semseg``, ``depth``) per task the config trains: a single-task run has one."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.tasks = cfg.task_names
        self.encoder = encoder_from_config(cfg)
        bottleneck = self.encoder.out_channels[self.encoder.output_stride]
        skips = skip_channels(self.encoder)
        for task in self.tasks:
            setattr(self, task, TaskBranch(cfg, bottleneck, skips, TASK_CHANNELS[task]))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        pyramid = pyramid_with_image(self.encoder, x)
        bottleneck = pyramid[self.encoder.output_stride]
        outputs = {}
        for task in self.tasks:
            prediction, _ = getattr(self, task)(bottleneck, pyramid)
            outputs[task] = resize_to(prediction, x.shape[-2:])
        return outputs
