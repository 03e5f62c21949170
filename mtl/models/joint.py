"""The template's multi-task DeepLabV3+: one encoder, one ASPP, one decoder for both tasks."""

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


@register_model("deeplabv3p")
class JointDeepLabV3p(nn.Module):
    """Shared encoder, ASPP and decoder; the decoder's last conv predicts 19 class logits + 1 depth (a
    single-task run: only its task's channels)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.tasks = cfg.task_names
        self.encoder = encoder_from_config(cfg)
        bottleneck = self.encoder.out_channels[self.encoder.output_stride]
        self.aspp = build_aspp(cfg, bottleneck)
        self.decoder = build_decoder(
            cfg, cfg.aspp_channels, skip_channels(self.encoder), sum(TASK_CHANNELS[t] for t in self.tasks)
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        pyramid = pyramid_with_image(self.encoder, x)
        predictions, _ = self.decoder(self.aspp(pyramid[self.encoder.output_stride]), pyramid)
        predictions = resize_to(predictions, x.shape[-2:])
        outputs = predictions.split([TASK_CHANNELS[t] for t in self.tasks], dim=1)
        return dict(zip(self.tasks, outputs))
