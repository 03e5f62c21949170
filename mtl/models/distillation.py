"""Task distillation: branched initial predictions, cross-task exchange of features, final predictions.

Returns ``semseg``/``depth`` (final) and ``semseg_initial``/``depth_initial`` (from decoders #1/#2, for
deep supervision), all at the input resolution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl.config import Config
from mtl.models.branched import TaskBranch
from mtl.models.heads import (
    DEPTH_CHANNELS,
    SEMSEG_CHANNELS,
    encoder_from_config,
    pyramid_with_image,
    skip_channels,
)
from mtl.models.parts import ASPPpart, SelfAttention, SqueezeAndExcitation, resize_to, skip_reducer
from mtl.models.registry import register_model

# Channels the re-injected skip is reduced to, per scale (4x follows decoder_skip_channels).
_FINE_SKIP_CHANNELS = {2: 32, 1: 16}


class PredictionHead(nn.Module):
    """Template decoders #3/#4: one 3x3 conv-BN-ReLU on the distilled features, then a 1x1 conv to outputs."""

    def __init__(self, channels: int, num_outputs: int) -> None:
        super().__init__()
        self.refine = ASPPpart(channels, channels, 3, padding=1)
        self.features_to_predictions = nn.Conv2d(channels, num_outputs, kernel_size=1)

    def forward(self, features: Tensor, skips: dict[int, Tensor]) -> Tensor:
        return self.features_to_predictions(self.refine(features))


class CrossTaskFusion(nn.Module):
    """Improved distillation step for one task: a learned, SE-gated fusion instead of a plain sum.

    The message from the other task is its self-attended features together with its initial
    predictions (class probabilities or depth). Own features and message are concatenated, fused by a
    1x1 conv-BN-ReLU, gated per channel by squeeze-and-excitation and added back to the own features
    as a residual, so the task keeps its own features and takes only what helps from the other one.
    """

    def __init__(self, channels: int, other_prediction_channels: int) -> None:
        super().__init__()
        self.attention = SelfAttention(channels, channels)
        self.fuse = ASPPpart(2 * channels + other_prediction_channels, channels, kernel_size=1)
        self.gate = SqueezeAndExcitation(channels)

    def forward(self, own: Tensor, other: Tensor, other_prediction: Tensor) -> Tensor:
        message = torch.cat([own, self.attention(other), other_prediction], dim=1)
        return own + self.gate(self.fuse(message))


class SkipRefineDecoder(nn.Module):
    """Improved decoders #3/#4: re-inject the encoder (or image) skip at the features' scale.

    The distilled features are concatenated with freshly reduced skip features of the same scale,
    fused by two 3x3 conv-BN-ReLU, gated by squeeze-and-excitation and mapped to the outputs by a 1x1
    conv, so the final prediction recovers the fine detail that the cross-task exchange may blur.
    """

    def __init__(self, channels: int, skip_in_channels: int, skip_reduced: int, scale: int, num_outputs: int) -> None:
        super().__init__()
        self.scale = scale
        self.skip = skip_reducer(skip_in_channels, skip_reduced, scale)
        self.fuse = nn.Sequential(
            ASPPpart(channels + skip_reduced, channels, 3, padding=1),
            ASPPpart(channels, channels, 3, padding=1),
        )
        self.gate = SqueezeAndExcitation(channels)
        self.features_to_predictions = nn.Conv2d(channels, num_outputs, kernel_size=1)

    def forward(self, features: Tensor, skips: dict[int, Tensor]) -> Tensor:
        skip = self.skip(skips[self.scale])
        x = torch.cat([resize_to(features, skip.shape[-2:]), skip], dim=1)
        return self.features_to_predictions(self.gate(self.fuse(x)))


@register_model("distillation")
class DistillationDeepLabV3p(nn.Module):
    """Branched decoders #1/#2 (initial predictions) -> cross-task distillation -> decoders #3/#4.

    ``distillation_decoder == "template"``: each task adds the other task's features, passed through
    :class:`SelfAttention`, to its own; decoders #3/#4 are :class:`PredictionHead` (3x3 conv-BN-ReLU +
    1x1 conv).

    ``distillation_decoder == "improved"``: (1) the exchange is a :class:`CrossTaskFusion`: the message
    also carries the other task's initial predictions (softmax class probabilities for segmentation,
    the depth map for depth), which are deeply supervised and so more direct evidence than features
    (e.g. a depth discontinuity marks an object boundary; a class says how far away ground or sky
    are); the message is fused with the own features by a learned 1x1 conv instead of a fixed sum and
    gated per channel by squeeze-and-excitation, so each task can ignore unhelpful channels of the
    other; the result is added as a residual, so the initial features pass through unchanged at worst.
    (2) decoders #3/#4 are :class:`SkipRefineDecoder`: they re-inject the encoder skip features at the
    features' scale (the 4x features, or the 2x/1x ones when those fusions are on), so the final
    predictions regain boundary detail, with two 3x3 fusions and an SE gate.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.design = cfg.distillation_decoder
        self.encoder = encoder_from_config(cfg)
        bottleneck = self.encoder.out_channels[self.encoder.output_stride]
        skips = skip_channels(self.encoder)
        self.semseg_initial = TaskBranch(cfg, bottleneck, skips, SEMSEG_CHANNELS)
        self.depth_initial = TaskBranch(cfg, bottleneck, skips, DEPTH_CHANNELS)
        channels = self.semseg_initial.out_feature_channels
        scale = self.semseg_initial.output_scale

        if self.design == "template":
            self.attention_depth_to_semseg = SelfAttention(channels, channels)
            self.attention_semseg_to_depth = SelfAttention(channels, channels)
            self.semseg_final: PredictionHead | SkipRefineDecoder = PredictionHead(channels, SEMSEG_CHANNELS)
            self.depth_final: PredictionHead | SkipRefineDecoder = PredictionHead(channels, DEPTH_CHANNELS)
        elif self.design == "improved":
            self.fusion_semseg = CrossTaskFusion(channels, DEPTH_CHANNELS)
            self.fusion_depth = CrossTaskFusion(channels, SEMSEG_CHANNELS)
            reduced = cfg.decoder_skip_channels if scale == 4 else _FINE_SKIP_CHANNELS[scale]
            self.semseg_final = SkipRefineDecoder(channels, skips[scale], reduced, scale, SEMSEG_CHANNELS)
            self.depth_final = SkipRefineDecoder(channels, skips[scale], reduced, scale, DEPTH_CHANNELS)
        else:
            raise ValueError(
                f"distillation_decoder {self.design!r} is not a known design: expected 'template' or 'improved'"
            )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        pyramid = pyramid_with_image(self.encoder, x)
        bottleneck = pyramid[self.encoder.output_stride]
        semseg_initial, semseg_features = self.semseg_initial(bottleneck, pyramid)
        depth_initial, depth_features = self.depth_initial(bottleneck, pyramid)

        if self.design == "template":
            semseg_distilled = semseg_features + self.attention_depth_to_semseg(depth_features)
            depth_distilled = depth_features + self.attention_semseg_to_depth(semseg_features)
        else:
            semseg_distilled = self.fusion_semseg(semseg_features, depth_features, depth_initial)
            depth_distilled = self.fusion_depth(depth_features, semseg_features, semseg_initial.softmax(dim=1))

        size = x.shape[-2:]
        return {
            "semseg": resize_to(self.semseg_final(semseg_distilled, pyramid), size),
            "depth": resize_to(self.depth_final(depth_distilled, pyramid), size),
            "semseg_initial": resize_to(semseg_initial, size),
            "depth_initial": resize_to(depth_initial, size),
        }
