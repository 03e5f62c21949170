"""Turn the config's model switches into encoder, ASPP and decoder modules shared by the architectures.

The switches change the module graph itself: ``aspp`` off builds the template's 1x1 pass-through,
``decoder_skip`` off builds the template's pass-through decoder, and the decoder's extra fusions and
SE gates exist only when their keys are on.
"""

from __future__ import annotations

from torch import Tensor, nn

from mtl.config import Config
from mtl.models.encoder import ResNet34Encoder, build_encoder
from mtl.models.parts import ASPP, ASPPPassThrough, DecoderDeepLabV3p, DecoderPassThrough, default_aspp_rates

SEMSEG_CHANNELS = 19  # the Cityscapes evaluation classes
DEPTH_CHANNELS = 1
TASK_CHANNELS = {"semseg": SEMSEG_CHANNELS, "depth": DEPTH_CHANNELS}
IMAGE_CHANNELS = 3


def encoder_from_config(cfg: Config) -> ResNet34Encoder:
    return build_encoder(cfg.model_encoder_name, cfg.dilation_flags)


def skip_channels(encoder: ResNet34Encoder) -> dict[int, int]:
    """Channels of every skip source a decoder may read: the encoder pyramid plus the image at scale 1."""
    return {1: IMAGE_CHANNELS, **encoder.out_channels}


def pyramid_with_image(encoder: ResNet34Encoder, image: Tensor) -> dict[int, Tensor]:
    return {1: image, **encoder(image)}


def build_aspp(cfg: Config, in_channels: int) -> nn.Module:
    if not cfg.aspp:
        return ASPPPassThrough(in_channels, cfg.aspp_channels)
    rates = cfg.aspp_rates if cfg.aspp_rates is not None else default_aspp_rates(cfg.output_stride)
    return ASPP(in_channels, cfg.aspp_channels, rates)


def build_decoder(
    cfg: Config, bottleneck_channels: int, skips: dict[int, int], num_outputs: int
) -> DecoderPassThrough | DecoderDeepLabV3p:
    if not cfg.decoder_skip:
        return DecoderPassThrough(bottleneck_channels, num_outputs)
    return DecoderDeepLabV3p(
        bottleneck_channels,
        skips[4],
        num_outputs,
        skip_channels=cfg.decoder_skip_channels,
        skip_2x_channels=skips[2] if cfg.decoder_skip_2x else None,
        skip_1x_channels=skips[1] if cfg.decoder_skip_1x else None,
        se=cfg.decoder_se,
    )
