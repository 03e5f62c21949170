"""ResNet-34 encoder with per-stage dilation, returning its feature pyramid keyed by scale.

The module tree copies torchvision's ``resnet34`` (conv1, bn1, layer1..layer4, blocks with conv1, bn1,
conv2, bn2, downsample.0/.1), so torchvision's ImageNet state dict loads with strict key matching.
torchvision's own ``BasicBlock`` refuses dilation, hence the dilation-capable block below.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

RESNET34_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (channels, blocks) of layer1..layer4


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights file is not there and cannot be downloaded; the message says why and where to put it."""


class PretrainedWeightsMismatch(RuntimeError):
    """A weights file does not fit the encoder (missing, unexpected or mis-shaped tensors)."""


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps the spatial size of a stride-1 3x3 conv at any dilation.
    return nn.Conv2d(
        in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class DilatedBasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same parameter names), with a dilation for both 3x3 convs."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride, dilation)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels, 1, dilation)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet34Encoder(nn.Module):
    """ResNet-34 without its classifier; ``forward`` returns ``{scale: features}``.

    ``dilation`` holds one flag per stage (layer2, layer3, layer4): a dilated stage keeps the resolution
    of the previous one and multiplies the dilation of its 3x3 convs by 2 instead of striding, as
    torchvision's ``replace_stride_with_dilation`` does (its first block still uses the previous
    dilation). Scale = input size / feature size; a dilated stage replaces the entry of the stage
    before it, so every key maps to the deepest features at that scale.
    """

    def __init__(self, dilation: tuple[bool, bool, bool] = (False, False, False)) -> None:
        super().__init__()
        if len(dilation) != 3:
            raise ValueError(f"dilation needs one flag per stage (layer2, layer3, layer4), got {dilation!r}")
        self.dilation_flags = tuple(bool(d) for d in dilation)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self._in_channels = 64
        self._dilation = 1
        stage_scales = []  # the scale of each stage's output, layer1..layer4
        scale = 4
        for index, (channels, blocks) in enumerate(RESNET34_STAGES):
            dilate = index > 0 and self.dilation_flags[index - 1]
            stride = 1 if index == 0 else 2
            if stride == 2 and not dilate:
                scale *= 2
            setattr(self, f"layer{index + 1}", self._make_stage(channels, blocks, stride, dilate))
            stage_scales.append(scale)
        self.stage_scales = tuple(stage_scales)

        channels_per_scale = {2: 64}
        for (channels, _), stage_scale in zip(RESNET34_STAGES, self.stage_scales):
            channels_per_scale[stage_scale] = channels  # a deeper stage at the same scale replaces
        self.out_channels: dict[int, int] = channels_per_scale
        self.output_stride = max(channels_per_scale)
        self._init_weights()

    def _make_stage(self, channels: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._in_channels != channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        layers = [DilatedBasicBlock(self._in_channels, channels, stride, previous_dilation, downsample)]
        self._in_channels = channels
        layers += [DilatedBasicBlock(channels, channels, 1, self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's ResNet init, so a randomly initialised encoder starts like torchvision's.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        features: dict[int, Tensor] = {}
        x = self.relu(self.bn1(self.conv1(x)))
        features[2] = x
        x = self.maxpool(x)
        for index, scale in enumerate(self.stage_scales):
            x = getattr(self, f"layer{index + 1}")(x)
            features[scale] = x
        return features


def build_encoder(name: str, dilation: tuple[bool, bool, bool]) -> ResNet34Encoder:
    if name != "resnet34":
        raise ValueError(f"model_encoder_name {name!r} is not supported: expected 'resnet34'")
    return ResNet34Encoder(dilation)


# ----------------------------------------------------------------------------- ImageNet weights

# Set to 1 on machines that must never download: a missing cache file is then an error at once.
OFFLINE_ENV = "MTL_OFFLINE"
# Seconds a download may wait on the network for one connect or read before it fails (torch.hub sets none,
# so a network that drops packets would hang a run forever).
DOWNLOAD_STALL_ENV = "MTL_DOWNLOAD_STALL_S"
DEFAULT_DOWNLOAD_STALL_S = 60.0


def imagenet_weights_source(url: Optional[str] = None) -> tuple[Path, str]:
    """Where the ResNet-34 ImageNet weights live in torch hub's cache, and the URL they come from.

    ``url`` defaults to torchvision's ``ResNet34_Weights.IMAGENET1K_V1``; the cache file is named after
    the URL's last path component, as ``torch.hub.load_state_dict_from_url`` names it.
    """
    if url is None:
        from torchvision.models import ResNet34_Weights

        url = ResNet34_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    return path, url


def offline() -> bool:
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"environment variable {OFFLINE_ENV}={value!r}: expected 1/true/yes or 0/false/no")


def _put_it_there(path: Path, url: str) -> str:
    return (
        f"Download {url} and put it at {str(path)!r} (or set pretrained_weights_path to a copy of it), "
        f"or run with pretrained=false."
    )


def _download_failure(exc: BaseException, stall: float) -> str:
    """The cause of a failed download in a few words: HTTP status, refused connection, stall, hash mismatch."""
    if isinstance(exc, TimeoutError) or (isinstance(exc, URLError) and isinstance(exc.reason, TimeoutError)):
        return f"the network sent nothing for {stall:g} s ({DOWNLOAD_STALL_ENV} sets how long to wait)"
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, URLError):
        return f"cannot connect: {exc.reason}"
    if isinstance(exc, RuntimeError) and "hash" in str(exc):
        return f"hash mismatch ({exc}); the downloaded file was discarded"
    return f"{type(exc).__name__}: {exc}"


def download_stall_seconds() -> float:
    raw = os.environ.get(DOWNLOAD_STALL_ENV, "").strip()
    if not raw:
        return DEFAULT_DOWNLOAD_STALL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise PretrainedWeightsUnavailable(f"{DOWNLOAD_STALL_ENV}={raw!r}: expected a positive number of seconds")
    return value


def download_imagenet_weights(url: str, path: Path) -> None:
    """Fetch ``url`` into torch hub's cache file ``path`` the way torchvision's weights API does.

    ``torch.hub.download_url_to_file`` with the SHA-256 prefix from the file name (``name-<sha256>.pth``,
    as ``load_state_dict_from_url(check_hash=True)`` takes it): the file lands at ``path`` only when
    complete and its hash matches. Any failure raises :class:`PretrainedWeightsUnavailable` naming the
    URL, the cache path and the cause.
    """
    if offline():
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for resnet34 are not in torch hub's cache ({str(path)!r}) and {OFFLINE_ENV} is set, "
            f"so they are not downloaded from {url}. " + _put_it_there(path, url)
        )
    match = torch.hub.HASH_REGEX.search(path.name)
    if match is None or len(match.group(1)) < 8:
        raise PretrainedWeightsUnavailable(
            f"pretrained_weights_url {url!r}: the file name must carry the first 8+ hex digits of the file's "
            f"SHA-256 (name-<sha256>.pth, like torchvision's files) so the download can be checked"
        )
    progress = sys.stderr.isatty()
    stall = download_stall_seconds()
    print(f"downloading ImageNet weights {url} to {path}", file=sys.stderr, flush=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(stall)  # urllib (under torch.hub) takes the default for its sockets
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1), progress=progress)
    except Exception as exc:  # every cause ends the same way: no file, a message saying why
        raise PretrainedWeightsUnavailable(
            f"could not download ImageNet weights for resnet34 from {url} to {str(path)!r}: "
            f"{_download_failure(exc, stall)}. " + _put_it_there(path, url)
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    print(f"downloaded ImageNet weights to {path}", file=sys.stderr, flush=True)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download or a non-PyTorch file
        raise PretrainedWeightsMismatch(f"cannot read ImageNet weights file {str(path)!r}: {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedWeightsMismatch(
            f"ImageNet weights file {str(path)!r} must hold a plain state dict (parameter name -> tensor), "
            f"like torchvision's resnet34 file; got {type(state).__name__}"
        )
    return dict(state)


def load_imagenet_weights(
    encoder: ResNet34Encoder, path: Optional[str | Path] = None, url: Optional[str] = None
) -> Path:
    """Copy torchvision's ResNet-34 ImageNet weights into ``encoder``; returns the file it read.

    With ``path``, that state dict file (nothing is downloaded). Without, the file of ``url`` (default:
    torchvision's ``ResNet34_Weights.IMAGENET1K_V1``) in torch hub's cache, downloaded and hash-checked
    there first when missing, unless ``MTL_OFFLINE=1``. There is never a fallback to random init: a
    file that cannot be had raises :class:`PretrainedWeightsUnavailable`, a file that does not fit
    raises :class:`PretrainedWeightsMismatch`. The classifier (``fc.*``) is ignored.
    """
    if path is None:
        weights_path, url = imagenet_weights_source(url)
        if not weights_path.is_file():
            download_imagenet_weights(url, weights_path)
    else:
        weights_path = Path(path)
        if not weights_path.is_file():
            raise PretrainedWeightsUnavailable(
                f"pretrained_weights_path {str(weights_path)!r} does not exist: expected torchvision's resnet34 "
                f"ImageNet state dict (from {imagenet_weights_source(url)[1]})"
            )

    state = {k: v for k, v in _read_state_dict(weights_path).items() if not k.startswith("fc.")}
    expected = encoder.state_dict()
    # BatchNorm step counters are not weights; older torchvision files leave them out, and BatchNorm
    # fills them in when loading such a file.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k} (file {tuple(state[k].shape)}, encoder {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if mis_shaped:
            parts.append(f"wrong shapes: {', '.join(mis_shaped)}")
        raise PretrainedWeightsMismatch(
            f"ImageNet weights file {str(weights_path)!r} does not fit the resnet34 encoder; " + "; ".join(parts)
        )
    encoder.load_state_dict(state, strict=True)
    return weights_path
