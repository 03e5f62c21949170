"""The architectures through their public interface: registry, output contract, gradients, switches, summary."""

from __future__ import annotations

import pytest
import torch

from mtl.config import ConfigError, make_config
from mtl.models import available_models, build_model, model_summary
from mtl.models.parts import ASPP, SqueezeAndExcitation, default_aspp_rates
from mtl.models.summary import count_model, summary_table

H, W = 64, 96
DILATIONS = {"FFF": (False, False, False), "FFT": (False, False, True), "FTT": (False, True, True)}
# Every registered architecture, plus the improved distillation design.
ARCHITECTURES = {
    "deeplabv3p": {"model_name": "deeplabv3p"},
    "branched": {"model_name": "branched"},
    "distillation": {"model_name": "distillation"},
    "distillation-improved": {"model_name": "distillation", "distillation_decoder": "improved"},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(architecture: str, dilation: str = "FFF", **overrides):
    flags = DILATIONS[dilation]
    return make_config(
        {
            **ARCHITECTURES[architecture],
            "dilation_layer2": flags[0],
            "dilation_layer3": flags[1],
            "dilation_layer4": flags[2],
            **overrides,
        }
    )


def expected_keys(architecture: str) -> set[str]:
    keys = {"semseg", "depth"}
    if architecture.startswith("distillation"):
        keys |= {"semseg_initial", "depth_initial"}
    return keys


def check_outputs(architecture: str, outputs: dict, batch: int = 2) -> None:
    assert set(outputs) == expected_keys(architecture)
    for key, tensor in outputs.items():
        channels = 19 if key.startswith("semseg") else 1
        assert tensor.shape == (batch, channels, H, W), key
        assert torch.isfinite(tensor).all(), key


def test_every_architecture_is_registered():
    assert set(available_models()) == {"deeplabv3p", "branched", "distillation"}


@pytest.mark.parametrize("dilation", list(DILATIONS))
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_output_shapes_per_dilation(architecture, dilation):
    model = build_model(config(architecture, dilation, aspp=True, decoder_skip=True))
    with torch.no_grad():
        check_outputs(architecture, model(torch.randn(2, 3, H, W)))


# Both switches off for every architecture (the template's graph); one on at a time for the joint model
# and the two distillation designs (branched shares its task branches with distillation).
SWITCH_CASES = [(architecture, False, False) for architecture in ARCHITECTURES] + [
    (architecture, aspp, not aspp)
    for architecture in ("deeplabv3p", "distillation", "distillation-improved")
    for aspp in (True, False)
]


@pytest.mark.parametrize("architecture, aspp, decoder_skip", SWITCH_CASES)
def test_output_shapes_with_aspp_and_skip_switches(architecture, aspp, decoder_skip):
    model = build_model(config(architecture, aspp=aspp, decoder_skip=decoder_skip))
    with torch.no_grad():
        check_outputs(architecture, model(torch.randn(2, 3, H, W)))


GRADIENT_CASES = {
    "joint, SE + all skips": (
        "deeplabv3p",
        "FFT",
        {"decoder_se": True, "decoder_skip_2x": True, "decoder_skip_1x": True},
    ),
    "branched": ("branched", "FTT", {}),
    "distillation": ("distillation", "FFT", {}),
    "distillation improved, SE + 2x": ("distillation-improved", "FFF", {"decoder_se": True, "decoder_skip_2x": True}),
    "distillation improved, 1x": ("distillation-improved", "FFF", {"decoder_skip_1x": True}),
}


@pytest.mark.parametrize("case", list(GRADIENT_CASES))
def test_gradients_reach_every_parameter(case):
    architecture, dilation, overrides = GRADIENT_CASES[case]
    torch.manual_seed(0)
    model = build_model(config(architecture, dilation, aspp=True, decoder_skip=True, **overrides)).train()
    outputs = model(torch.randn(2, 3, H, W))
    check_outputs(architecture, outputs)
    # Random weights per output element: a plain sum would cancel exactly through BatchNorm.
    loss = sum((tensor * torch.randn_like(tensor)).sum() for tensor in outputs.values())
    loss.backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [name for name, p in trainable if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    not_finite = [name for name, p in trainable if not torch.isfinite(p.grad).all()]
    assert not not_finite
    zero = [name for name, p in trainable if not p.grad.abs().sum() > 0]
    assert not zero, f"parameters with an all-zero gradient: {zero}"


def test_aspp_pooling_branch_trains_with_batch_size_one():
    aspp = ASPP(512, 64, rates=(1, 2, 3)).train()
    x = torch.randn(1, 512, 4, 6)
    out = aspp(x)
    assert out.shape == (1, 64, 4, 6)
    out.sum().backward()
    pooling = aspp.branches[-1]
    assert pooling.conv.weight.grad is not None and pooling.conv.weight.grad.abs().sum() > 0


def test_default_aspp_rates_follow_output_stride():
    assert default_aspp_rates(32) == (3, 6, 9)
    assert default_aspp_rates(16) == (6, 12, 18)
    assert default_aspp_rates(8) == (12, 24, 36)
    model = build_model(config("deeplabv3p", "FTT", aspp=True))
    assert model.aspp.rates == (12, 24, 36)
    model = build_model(config("deeplabv3p", "FFT", aspp=True, aspp_rates=(2, 4, 8)))
    atrous = [m for m in model.aspp.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    dilations = sorted(m.dilation for m in atrous)
    assert dilations == [(2, 2), (4, 4), (8, 8)]


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        build_model(make_config(model_name="segformer"))
    message = str(info.value)
    assert "segformer" in message
    for name in available_models():
        assert name in message


def graph(cfg) -> tuple[set[str], set[str]]:
    model = build_model(cfg)
    return {type(m).__name__ for m in model.modules()}, {name for name, _ in model.named_parameters()}


def test_switches_change_the_module_graph():
    base_types, base_params = graph(config("deeplabv3p"))
    aspp_types, aspp_params = graph(config("deeplabv3p", aspp=True))
    skip_types, skip_params = graph(config("deeplabv3p", decoder_skip=True))
    se_types, se_params = graph(config("deeplabv3p", decoder_skip=True, decoder_se=True))
    fine_types, fine_params = graph(config("deeplabv3p", decoder_skip=True, decoder_skip_2x=True))

    assert "ASPP" in aspp_types and "ASPP" not in base_types
    assert "ASPPPassThrough" in base_types and "ASPPPassThrough" not in aspp_types
    assert "DecoderDeepLabV3p" in skip_types and "DecoderDeepLabV3p" not in base_types
    assert "DecoderPassThrough" in base_types and "DecoderPassThrough" not in skip_types
    assert SqueezeAndExcitation.__name__ in se_types and SqueezeAndExcitation.__name__ not in skip_types
    assert se_params > skip_params
    assert fine_params > skip_params and any(".skips_fine.2x." in name for name in fine_params)
    assert len({frozenset(p) for p in (base_params, aspp_params, skip_params, se_params, fine_params)}) == 5


def test_distillation_designs_differ():
    template_types, _ = graph(config("distillation"))
    improved_types, _ = graph(config("distillation-improved"))
    assert "CrossTaskFusion" in improved_types and "CrossTaskFusion" not in template_types
    assert "SelfAttention" in template_types and "SelfAttention" in improved_types


@pytest.mark.parametrize("architecture", ["deeplabv3p", "branched", "distillation"])
@pytest.mark.parametrize("key", ["decoder_se", "decoder_skip_2x", "decoder_skip_1x"])
def test_decoder_extensions_need_the_deeplabv3p_decoder(architecture, key):
    # A cross-key rule of the Config: the config is refused before any model is built.
    with pytest.raises(ConfigError, match=f"{key} need decoder_skip=true"):
        config(architecture, **{key: True})


@pytest.mark.parametrize("model_name", ["deeplabv3p", "branched"])
def test_distillation_design_rejected_for_other_models(model_name):
    with pytest.raises(ConfigError, match="'distillation_decoder' is 'improved' but model_name is"):
        make_config(model_name=model_name, distillation_decoder="improved")
    assert make_config(model_name="distillation", distillation_decoder="improved").distillation_decoder == "improved"


def test_model_summary_counts_parameters_and_flops():
    cfg = config("deeplabv3p")
    small = model_summary(cfg, 32, 64)
    large = model_summary(cfg, 64, 128)
    model = build_model(cfg)
    assert small["params"] == sum(p.numel() for p in model.parameters())
    assert small["params"] == large["params"]
    # Only convolutions count, and their output sizes all double: exactly 4x the FLOPs.
    assert large["flops"] == 4 * small["flops"] > 0
    assert small["gflops"] == pytest.approx(small["flops"] / 1e9)

    torch.manual_seed(3)
    expected_next = torch.rand(3)
    torch.manual_seed(3)
    model_summary(cfg, 32, 32)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched

    table = summary_table({"baseline": cfg}, 32, 64)
    lines = table.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| baseline | deeplabv3p | 32 |")
    assert f"{small['gflops']:.2f}" in lines[2]

    # A training's own model, counted where it stands: the same counts, and nothing of it changed.
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    assert count_model(model, 32, 64) == small
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.rand(3), expected_next)


@pytest.mark.parametrize("task", ["semseg", "depth"])
@pytest.mark.parametrize("architecture", ["deeplabv3p", "branched"])
def test_a_single_task_model_has_one_head_and_with_one_task_both_architectures_are_the_same_network(architecture,
                                                                                                  task):
    torch.manual_seed(0)
    model = build_model(config(architecture, aspp=True, decoder_skip=True, tasks=task))
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, H, W))
    assert list(outputs) == [task] and outputs[task].shape == (2, 19 if task == "semseg" else 1, H, W)
    # One branch of the branched model is the joint model's ASPP and decoder, built in the same order.
    torch.manual_seed(0)
    joint = build_model(config("deeplabv3p", aspp=True, decoder_skip=True, tasks=task))
    assert [p.shape for p in model.parameters()] == [p.shape for p in joint.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), joint.parameters()))
