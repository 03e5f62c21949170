"""Building blocks of the architectures: ASPP, decoders, self-attention and squeeze-and-excitation.

Every decoder returns ``(predictions, features)`` at its output scale (``output_scale``, relative to
the input), so that distillation can reuse the features. Decoders read their skip connections from a
``{scale: tensor}`` mapping: the encoder's pyramid plus the input image at scale 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize to ``size`` (H, W); a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ASPPpart(nn.Sequential):
    """Conv (no bias, BatchNorm follows) -> BatchNorm -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPPassThrough(nn.Module):
    """The template's stand-in for ASPP: one 1x1 conv-BN-ReLU to the bottleneck channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_out = ASPPpart(in_channels, out_channels, kernel_size=1)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(x)


class ASPPPooling(nn.Module):
    """Image-level branch of ASPP: global average pool -> 1x1 conv (with bias) -> ReLU -> broadcast.

    No BatchNorm here, unlike DeepLabv3: after the pooling every sample holds a single value per
    channel, so with batch size 1 in training mode BatchNorm has one value per channel to normalise and
    fails (and with small batches its statistics are mostly noise). The conv's bias takes BatchNorm's
    shift; the projection after the concatenation normalises the branch together with the others.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.relu(self.conv(self.pool(x)))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])  # bilinear upsampling of a 1x1 map


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3/v3+).

    Branches: a 1x1 conv, three 3x3 atrous convs at ``rates`` and the image-level pooling branch, each
    to ``out_channels``; concatenated and projected back to ``out_channels`` by a 1x1 conv-BN-ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        if len(rates) != 3 or any(int(r) < 1 for r in rates):
            raise ValueError(f"ASPP needs three atrous rates >= 1, got {tuple(rates)!r}")
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            [ASPPpart(in_channels, out_channels, kernel_size=1)]
            + [ASPPpart(in_channels, out_channels, 3, padding=r, dilation=r) for r in self.rates]
            + [ASPPPooling(in_channels, out_channels)]
        )
        self.project = ASPPpart(out_channels * len(self.branches), out_channels, kernel_size=1)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


def default_aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """Atrous rates that cover a similar image area at every output stride (doubled per halving)."""
    rates = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}
    if output_stride not in rates:
        raise ValueError(f"no default ASPP rates for output stride {output_stride}: expected one of 32, 16, 8")
    return rates[output_stride]


class SqueezeAndExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        # A floor on the hidden width: with few units (32 channels / 16 = 2) all of them can start dead
        # behind the ReLU (the pooled inputs are non-negative), which would freeze the gate for good.
        hidden = max(channels // reduction, min_hidden)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.excite(self.pool(x))


class SelfAttention(nn.Module):
    """The template's self-attention: 1x1-conv features gated by a 1x1-conv sigmoid mask."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.attention = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        # A zero mask conv starts every gate at 0.5, so the other task's message starts at half strength.
        nn.init.zeros_(self.attention.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.sigmoid(self.attention(x))


def skip_reducer(in_channels: int, out_channels: int, scale: int) -> ASPPpart:
    """Reduce skip features before fusion: 1x1 for encoder features; 3x3 for the image (scale 1),
    whose three colour channels alone say nothing about local structure."""
    if scale == 1:
        return ASPPpart(in_channels, out_channels, kernel_size=3, padding=1)
    return ASPPpart(in_channels, out_channels, kernel_size=1)


class DecoderPassThrough(nn.Module):
    """The template's placeholder decoder: upsample the bottleneck to the 4x size, 1x1 conv to outputs."""

    output_scale = 4

    def __init__(self, bottleneck_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.features_to_predictions = nn.Conv2d(bottleneck_channels, num_outputs, kernel_size=1)
        self.out_feature_channels = bottleneck_channels

    def forward(self, bottleneck: Tensor, skips: Mapping[int, Tensor]) -> tuple[Tensor, Tensor]:
        features = resize_to(bottleneck, skips[4].shape[-2:])
        return self.features_to_predictions(features), features


class DecoderDeepLabV3p(nn.Module):
    """DeepLabV3+ decoder with optional extra skip fusions at 2x and 1x and optional SE.

    4x: the skip features are reduced by a 1x1 conv-BN-ReLU to ``skip_channels`` (48), the bottleneck is
    upsampled to their size, both are concatenated and fused by two 3x3 conv-BN-ReLU (``mid_channels``).
    With ``skip_2x_channels`` and/or ``skip_1x_channels`` the features are narrowed (1x1) and refined
    once more at each finer scale (upsample, concat the reduced skip, one 3x3 conv-BN-ReLU), with fewer
    channels there to keep the cost of the high resolutions moderate. With ``se`` a squeeze-and-excitation
    gate follows each fusion. A final 1x1 conv gives the predictions at the finest fused scale.
    """

    def __init__(
        self,
        bottleneck_channels: int,
        skip_4x_channels: int,
        num_outputs: int,
        *,
        skip_channels: int = 48,
        mid_channels: int = 256,
        skip_2x_channels: int | None = None,
        skip_1x_channels: int | None = None,
        fine_channels: tuple[int, int] = (64, 32),
        fine_skip_channels: tuple[int, int] = (32, 16),
        se: bool = False,
    ) -> None:
        super().__init__()
        self.skip_4x = skip_reducer(skip_4x_channels, skip_channels, 4)
        self.fuse_4x = nn.Sequential(
            ASPPpart(bottleneck_channels + skip_channels, mid_channels, 3, padding=1),
            ASPPpart(mid_channels, mid_channels, 3, padding=1),
        )
        self.se_4x = SqueezeAndExcitation(mid_channels) if se else nn.Identity()

        # Finer stages, coarse to fine: (scale, skip input channels, reduced skip channels, output channels).
        fine = []
        if skip_2x_channels is not None:
            fine.append((2, skip_2x_channels, fine_skip_channels[0], fine_channels[0]))
        if skip_1x_channels is not None:
            fine.append((1, skip_1x_channels, fine_skip_channels[1], fine_channels[1]))
        self.fine_scales = tuple(stage[0] for stage in fine)
        channels = mid_channels
        if fine:
            self.narrow = ASPPpart(mid_channels, fine[0][3], kernel_size=1)
            channels = fine[0][3]
        self.skips_fine = nn.ModuleDict()
        self.fuse_fine = nn.ModuleDict()
        self.se_fine = nn.ModuleDict()
        for scale, in_ch, reduced_ch, out_ch in fine:
            key = f"{scale}x"
            self.skips_fine[key] = skip_reducer(in_ch, reduced_ch, scale)
            self.fuse_fine[key] = ASPPpart(channels + reduced_ch, out_ch, 3, padding=1)
            self.se_fine[key] = SqueezeAndExcitation(out_ch) if se else nn.Identity()
            channels = out_ch

        self.features_to_predictions = nn.Conv2d(channels, num_outputs, kernel_size=1)
        self.out_feature_channels = channels
        self.output_scale = self.fine_scales[-1] if fine else 4

    def forward(self, bottleneck: Tensor, skips: Mapping[int, Tensor]) -> tuple[Tensor, Tensor]:
        skip = self.skip_4x(skips[4])
        x = torch.cat([resize_to(bottleneck, skip.shape[-2:]), skip], dim=1)
        x = self.se_4x(self.fuse_4x(x))
        if self.fine_scales:
            x = self.narrow(x)
        for scale in self.fine_scales:
            key = f"{scale}x"
            skip = self.skips_fine[key](skips[scale])
            x = torch.cat([resize_to(x, skip.shape[-2:]), skip], dim=1)
            x = self.se_fine[key](self.fuse_fine[key](x))
        return self.features_to_predictions(x), x
