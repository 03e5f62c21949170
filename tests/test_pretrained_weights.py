"""Downloading the ImageNet weights into torch hub's cache, against a local HTTP server on 127.0.0.1.

The served file is a state dict with the encoder's own parameter names and shapes. Its large tensors
are expanded views of one value per output channel, so the file is a few kilobytes while every key
still gets distinct values that the test can find again in the loaded encoder.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from mtl.config import Config, make_config
from mtl.models import build_model
from mtl.models.encoder import (
    PretrainedWeightsUnavailable,
    ResNet34Encoder,
    load_imagenet_weights,
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME, downloads allowed."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    # An earlier torch.hub.set_dir in this process would take precedence over TORCH_HOME.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("MTL_OFFLINE", "0")
    return home


@pytest.fixture
def served_dir(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (ephemeral port); yields (folder, base URL, requested paths)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy configured on the machine must not see (or swallow) requests to the local server.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@functools.lru_cache(maxsize=1)
def encoder_state_template() -> dict[str, torch.Tensor]:
    return {key: torch.empty_like(tensor) for key, tensor in ResNet34Encoder().state_dict().items()}


def small_state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    state = {}
    for key, tensor in encoder_state_template().items():
        if tensor.dim() <= 1:
            state[key] = torch.rand(tensor.shape, generator=generator).to(tensor.dtype) if tensor.is_floating_point() \
                else torch.full_like(tensor, 3)
        else:  # one value per output channel, expanded: the file stores only those values
            values = torch.rand(tensor.shape[0], *[1] * (tensor.dim() - 1), generator=generator)
            state[key] = values.expand(tensor.shape)
    return state


def write_weights(folder: Path, state: dict[str, torch.Tensor], hash_in_name: str | None = None) -> Path:
    """Save ``state`` as ``resnet34-<sha256[:8]>.pth`` (or with the given wrong hash) in ``folder``."""
    scratch = folder / "scratch.pth"
    torch.save(state, scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    name = f"resnet34-{hash_in_name or digest[:8]}.pth"
    assert hash_in_name is None or not digest.startswith(hash_in_name)
    path = folder / name
    scratch.rename(path)
    return path


def cache_files(torch_home: Path) -> list[Path]:
    checkpoints = torch_home / "hub" / "checkpoints"
    return sorted(checkpoints.iterdir()) if checkpoints.exists() else []


def test_missing_weights_are_downloaded_into_the_hub_cache(torch_home, served_dir):
    folder, base, _ = served_dir
    state = small_state_dict()
    served = write_weights(folder, state)
    url = f"{base}/{served.name}"

    model = build_model(make_config(pretrained=True, pretrained_weights_url=url))

    assert cache_files(torch_home) == [torch_home / "hub" / "checkpoints" / served.name]
    assert (torch_home / "hub" / "checkpoints" / served.name).read_bytes() == served.read_bytes()
    for key, tensor in model.encoder.state_dict().items():
        assert torch.equal(tensor, state[key]), key


def test_cached_weights_are_not_downloaded_again(torch_home, served_dir):
    folder, base, requests = served_dir
    state = small_state_dict()
    served = write_weights(folder, state)
    url = f"{base}/{served.name}"
    load_imagenet_weights(ResNet34Encoder(), url=url)
    assert requests == [f"/{served.name}"]

    encoder = ResNet34Encoder()
    assert load_imagenet_weights(encoder, url=url) == torch_home / "hub" / "checkpoints" / served.name
    assert torch.equal(encoder.layer4[2].conv2.weight, state["layer4.2.conv2.weight"])
    assert requests == [f"/{served.name}"]  # read from the cache, not fetched again


def test_hash_mismatch_is_a_clear_error_and_leaves_no_file(torch_home, served_dir):
    folder, base, _ = served_dir
    served = write_weights(folder, small_state_dict(), hash_in_name="00000000")
    url = f"{base}/{served.name}"
    encoder = ResNet34Encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}

    with pytest.raises(PretrainedWeightsUnavailable) as info:
        load_imagenet_weights(encoder, url=url)

    message = str(info.value)
    cache_path = torch_home / "hub" / "checkpoints" / served.name
    assert url in message and str(cache_path) in message and "hash mismatch" in message
    assert cache_files(torch_home) == []  # neither the file nor a partial download
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # untouched, no new init


def test_server_down_is_a_clear_error_naming_the_url(torch_home):
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet34-0123abcd.pth"

    with pytest.raises(PretrainedWeightsUnavailable) as info:
        build_model(make_config(pretrained=True, pretrained_weights_url=url))

    message = str(info.value)
    assert url in message and "Connection refused" in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet34-0123abcd.pth") in message
    assert "pretrained=false" in message
    assert cache_files(torch_home) == []


def test_a_server_that_never_answers_is_a_clear_error_after_the_stall_time(torch_home, monkeypatch):
    # It accepts the connection and then sends nothing, as a network that drops packets would.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/resnet34-0123abcd.pth"
        monkeypatch.setenv("MTL_DOWNLOAD_STALL_S", "0.5")
        with pytest.raises(PretrainedWeightsUnavailable) as info:
            load_imagenet_weights(ResNet34Encoder(), url=url)
    message = str(info.value)
    assert url in message and "the network sent nothing for 0.5 s (MTL_DOWNLOAD_STALL_S" in message
    assert cache_files(torch_home) == []
    assert socket.getdefaulttimeout() is None  # the process's default is restored


def test_a_bad_stall_time_is_named(torch_home, monkeypatch):
    monkeypatch.setenv("MTL_DOWNLOAD_STALL_S", "soon")
    with pytest.raises(PretrainedWeightsUnavailable, match="MTL_DOWNLOAD_STALL_S='soon': expected a positive number"):
        load_imagenet_weights(ResNet34Encoder(), url="http://127.0.0.1:9/resnet34-0123abcd.pth")


def test_missing_file_on_the_server_names_the_http_status(torch_home, served_dir):
    _, base, _ = served_dir
    url = f"{base}/resnet34-0123abcd.pth"
    with pytest.raises(PretrainedWeightsUnavailable, match="HTTP 404"):
        load_imagenet_weights(ResNet34Encoder(), url=url)
    assert cache_files(torch_home) == []


def test_offline_never_contacts_the_server(torch_home, served_dir, monkeypatch):
    folder, base, requests = served_dir
    served = write_weights(folder, small_state_dict())
    url = f"{base}/{served.name}"
    monkeypatch.setenv("MTL_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        load_imagenet_weights(ResNet34Encoder(), url=url)
    message = str(info.value)
    assert "MTL_OFFLINE" in message and url in message
    assert str(torch_home / "hub" / "checkpoints" / served.name) in message
    assert cache_files(torch_home) == [] and requests == []


def test_bad_offline_value_is_rejected(torch_home, monkeypatch):
    monkeypatch.setenv("MTL_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="MTL_OFFLINE='maybe'"):
        load_imagenet_weights(ResNet34Encoder(), url="http://127.0.0.1:9/resnet34-0123abcd.pth")


def test_url_without_a_hash_in_the_file_name_is_refused(torch_home, served_dir):
    folder, base, _ = served_dir
    state = small_state_dict()
    torch.save(state, folder / "resnet34.pth")
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained_weights_url .*sha256"):
        load_imagenet_weights(ResNet34Encoder(), url=f"{base}/resnet34.pth")
    assert cache_files(torch_home) == []


def test_explicit_path_never_downloads(torch_home, served_dir, tmp_path):
    folder, base, requests = served_dir
    served = write_weights(folder, small_state_dict())
    with pytest.raises(PretrainedWeightsUnavailable, match="nowhere.pth"):
        load_imagenet_weights(ResNet34Encoder(), tmp_path / "nowhere.pth", url=f"{base}/{served.name}")
    assert cache_files(torch_home) == [] and requests == []


def test_weights_url_is_run_invariant():
    base = Config(pretrained=True)
    mirror = base.replace(pretrained_weights_url="http://mirror.example/resnet34-b627a593.pth")
    assert mirror.config_hash() == base.config_hash()
    assert "pretrained_weights_url" not in mirror.hyperparameters()
