"""The ResNet-34 encoder: output strides, torchvision compatibility and ImageNet weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from mtl.config import make_config
from mtl.models import build_model
from mtl.models.encoder import (
    PretrainedWeightsMismatch,
    PretrainedWeightsUnavailable,
    ResNet34Encoder,
    imagenet_weights_source,
    load_imagenet_weights,
)

FFF, FFT, FTT = (False, False, False), (False, False, True), (False, True, True)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def torchvision_resnet34():
    torch.manual_seed(0)
    return torchvision.models.resnet34(weights=None).eval()


@pytest.fixture(scope="module")
def torchvision_weights_file(tmp_path_factory, torchvision_resnet34) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet34.pth"
    torch.save(torchvision_resnet34.state_dict(), path)
    return path


@pytest.fixture
def hub_dir(tmp_path):
    """An empty torch hub cache for the duration of one test."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.mark.parametrize(
    "dilation, output_stride, scales",
    [
        (FFF, 32, [2, 4, 8, 16, 32]),
        (FFT, 16, [2, 4, 8, 16]),
        (FTT, 8, [2, 4, 8]),
        ((True, False, False), 16, [2, 4, 8, 16]),
    ],
)
def test_output_stride_and_pyramid(dilation, output_stride, scales):
    encoder = ResNet34Encoder(dilation).eval()
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, 64, 96))
    assert sorted(features) == scales
    assert encoder.output_stride == output_stride
    deepest = features[max(features)]
    assert deepest.shape == (2, 512, 64 // output_stride, 96 // output_stride)
    for scale, tensor in features.items():
        assert tensor.shape[-2:] == (64 // scale, 96 // scale)
        assert tensor.shape[1] == encoder.out_channels[scale]
    assert sorted(encoder.out_channels) == scales


def test_dilation_follows_torchvision_rule():
    # The first block of a dilated stage keeps the previous dilation; the rest use the new one.
    encoder = ResNet34Encoder(FTT)
    assert encoder.layer3[0].conv1.dilation == (1, 1) and encoder.layer3[0].conv1.stride == (1, 1)
    assert encoder.layer3[1].conv1.dilation == (2, 2)
    assert encoder.layer4[0].conv2.dilation == (2, 2)
    assert encoder.layer4[2].conv2.dilation == (4, 4) and encoder.layer4[2].conv2.padding == (4, 4)
    assert encoder.layer2[0].conv1.stride == (2, 2)


def test_torchvision_weights_load_and_features_match(torchvision_resnet34, torchvision_weights_file):
    encoder = ResNet34Encoder(FFF)
    load_imagenet_weights(encoder, torchvision_weights_file)
    reference = torchvision_resnet34.state_dict()
    own = encoder.state_dict()
    assert set(own) == {k for k in reference if not k.startswith("fc.")}
    for key, tensor in own.items():
        assert torch.equal(tensor, reference[key]), key

    encoder.eval()
    tv = torchvision_resnet34
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = encoder(x)
        y = tv.relu(tv.bn1(tv.conv1(x)))
        expected = {2: y}
        y = tv.maxpool(y)
        for scale, layer in zip((4, 8, 16, 32), (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            y = layer(y)
            expected[scale] = y
    assert sorted(features) == sorted(expected)
    for scale in expected:
        torch.testing.assert_close(features[scale], expected[scale], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dilation", [FFT, FTT])
def test_same_weights_load_into_dilated_encoders(dilation, torchvision_resnet34, torchvision_weights_file):
    encoder = ResNet34Encoder(dilation)
    load_imagenet_weights(encoder, torchvision_weights_file)
    reference = torchvision_resnet34.state_dict()
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, reference[key]), key


def test_build_model_loads_weights_from_path(torchvision_resnet34, torchvision_weights_file):
    cfg = make_config(pretrained=True, pretrained_weights_path=str(torchvision_weights_file), dilation_layer4=True)
    model = build_model(cfg)
    reference = torchvision_resnet34.state_dict()
    for key, tensor in model.encoder.state_dict().items():
        assert torch.equal(tensor, reference[key]), key


def test_build_model_loads_weights_from_torch_hub_cache(hub_dir, torchvision_resnet34, torchvision_weights_file):
    expected_path, url = imagenet_weights_source()
    assert expected_path == hub_dir / "checkpoints" / Path(url).name
    expected_path.parent.mkdir(parents=True)
    expected_path.write_bytes(torchvision_weights_file.read_bytes())
    model = build_model(make_config(pretrained=True))
    assert torch.equal(model.encoder.layer4[2].bn2.weight, torchvision_resnet34.layer4[2].bn2.weight)


def test_missing_cache_file_offline_is_a_clear_error(hub_dir, monkeypatch):
    monkeypatch.setenv("MTL_OFFLINE", "1")
    expected_path, url = imagenet_weights_source()
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        build_model(make_config(pretrained=True))
    message = str(info.value)
    assert str(expected_path) in message and url in message and "MTL_OFFLINE" in message
    assert not expected_path.exists()  # nothing was downloaded or written


def test_missing_explicit_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(PretrainedWeightsUnavailable, match="nowhere.pth"):
        load_imagenet_weights(ResNet34Encoder(), missing)


def test_state_dict_with_missing_or_extra_key_is_rejected(tmp_path, torchvision_resnet34):
    state = dict(torchvision_resnet34.state_dict())
    del state["layer3.2.conv1.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    encoder = ResNet34Encoder()
    before = encoder.layer1[0].conv1.weight.clone()
    with pytest.raises(PretrainedWeightsMismatch) as info:
        load_imagenet_weights(encoder, path)
    assert "missing keys: layer3.2.conv1.weight" in str(info.value)
    assert "unexpected keys: layer5.0.conv1.weight" in str(info.value)
    assert torch.equal(encoder.layer1[0].conv1.weight, before)  # nothing half-loaded


def test_file_that_is_not_a_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(PretrainedWeightsMismatch, match="plain state dict"):
        load_imagenet_weights(ResNet34Encoder(), path)


def test_state_dict_without_batchnorm_counters_loads(tmp_path, torchvision_resnet34):
    # Older torchvision files carry no num_batches_tracked; those are step counters, not weights.
    state = {k: v for k, v in torchvision_resnet34.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_counters.pth"
    torch.save(state, path)
    encoder = ResNet34Encoder()
    load_imagenet_weights(encoder, path)
    assert torch.equal(encoder.layer2[1].bn1.running_var, torchvision_resnet34.layer2[1].bn1.running_var)
