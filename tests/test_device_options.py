"""The device options of the config run through the engine and give the plain path's losses.

Training steps go through the engine's own ``Trainer.train_step`` / ``to_device`` / ``evaluate`` on a
tiny two-convolution network (the options act on whatever model the engine gets; a tiny one keeps
the steps stable and fast), with the same batch every step so that each step visibly lowers the loss:
an option that skipped or garbled an update would leave the tolerance. The real architecture is
checked under each numeric option with one forward pass. The loader options (workers, pinned memory,
persistent workers) must not change the batches at all. No timing is asserted anywhere.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtl.config import make_config
from mtl.data.loading import EpochSampler, make_loader
from mtl.data.transforms import DepthUnit
from mtl.models import build_model
from mtl.run.layout import RunDirectory
from mtl.run.trace import LocalTrace
from mtl.train.evaluation import evaluate
from mtl.train.loop import Trainer, first_non_finite
from mtl.train.losses import MultiTaskLoss
from mtl.train.optim import build_optimizer, build_scheduler
from mtl.train.runtime import to_device

DEPTH_UNIT = DepthUnit("meters", 27.0727, 29.1264)
BASE = {"aug_input_crop_size": 32, "batch_size": 4, "optimizer_lr": 0.05, "device": "cpu", "wandb_mode": "disabled",
        "progress": "none"}
STEPS = 4
# Relative tolerance on each training loss and on the validation loss, per option.
NUMERIC_OPTIONS = {
    "channels_last": ({"channels_last": True}, 1e-5),
    "bf16": ({"amp": "bf16"}, 1e-3),
    "fp16": ({"amp": "fp16"}, 1e-3),
    "bf16+channels_last": ({"amp": "bf16", "channels_last": True}, 1e-3),
}


class TinyMultiTask(torch.nn.Module):
    """Two convolutions with batch norm and one head per task, upsampled to the input like the decoders."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.semseg = torch.nn.Conv2d(16, 19, 1)
        self.depth = torch.nn.Conv2d(16, 1, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(image)
        size = image.shape[-2:]
        return {"semseg": F.interpolate(self.semseg(features), size=size, mode="bilinear", align_corners=False),
                "depth": F.interpolate(self.depth(features), size=size, mode="bilinear", align_corners=False)}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(size: int = 32, batch: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    semseg = torch.randint(0, 19, (batch, size, size), generator=generator)
    semseg[:, :2] = 255  # some ignored pixels
    depth = 4.0 + 100.0 * torch.rand(batch, 1, size, size, generator=generator)
    depth[:, :, :3] = 0.0  # some invalid depth
    return {"index": torch.arange(batch), "image": torch.randn(batch, 3, size, size, generator=generator),
            "semseg": semseg, "depth": depth}


def make_trainer(tmp_path, model: torch.nn.Module, **options) -> Trainer:
    """A Trainer set up as ``mtl-train`` sets one up (model memory format, GradScaler for fp16)."""
    cfg = make_config({**BASE, **options})
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    run = RunDirectory(tmp_path / "run")
    return Trainer(cfg=cfg, run=run, device=torch.device("cpu"), model=model, optimizer=optimizer,
                   scheduler=build_scheduler(cfg, optimizer), loss_fn=MultiTaskLoss(cfg, DEPTH_UNIT),
                   depth_unit=DEPTH_UNIT, trace=LocalTrace(run.metrics), batches=STEPS,
                   scaler=torch.amp.GradScaler("cpu") if cfg.amp == "fp16" else None)


def losses_of(trainer: Trainer, batch: dict[str, torch.Tensor]) -> tuple[list[float], float]:
    """(training loss of each of STEPS steps on ``batch``, validation loss afterwards)."""
    trainer.model.train()
    steps = [trainer.train_step(to_device(batch, trainer.device, trainer.cfg.channels_last))[0].item()
             for _ in range(STEPS)]
    point = evaluate(trainer.model, [batch], trainer.loss_fn, trainer.depth_unit, trainer.device, trainer.cfg)
    return steps, point["val/loss"]


def tiny_model() -> TinyMultiTask:
    torch.manual_seed(0)
    return TinyMultiTask()


@pytest.fixture(scope="module")
def plain_losses(tmp_path_factory) -> tuple[list[float], float]:
    steps, val = losses_of(make_trainer(tmp_path_factory.mktemp("plain"), tiny_model()), make_batch())
    # The comparison means something only if every step moves the loss by more than any tolerance used.
    assert min(abs(a - b) / a for a, b in zip(steps, steps[1:])) > 5 * max(t for _, t in NUMERIC_OPTIONS.values())
    return steps, val


@pytest.mark.parametrize("name", list(NUMERIC_OPTIONS))
def test_numeric_option_trains_like_the_plain_path(name, plain_losses, tmp_path):
    options, tolerance = NUMERIC_OPTIONS[name]
    steps, val = losses_of(make_trainer(tmp_path, tiny_model(), **options), make_batch())
    plain_steps, plain_val = plain_losses
    assert steps == pytest.approx(plain_steps, rel=tolerance)
    assert val == pytest.approx(plain_val, rel=tolerance)


def test_fp16_scaler_state_travels_in_the_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, tiny_model(), amp="fp16")
    losses_of(trainer, make_batch())
    trainer.scaler.update(new_scale=1024.0)  # as after a few overflows; a fresh scaler starts at 65536
    state = trainer.checkpoint_state()
    resumed = make_trainer(tmp_path, tiny_model(), amp="fp16")
    assert resumed.scaler.get_scale() != 1024.0
    resumed.restore(state)
    assert resumed.scaler.get_scale() == 1024.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_the_first_non_finite_weight_is_named_in_any_float_dtype(dtype, bad):
    big = torch.finfo(dtype).max
    state = {"steps": torch.tensor([2**62]), "a": torch.full((4, 3), big, dtype=dtype),
             "b": torch.tensor([1.0, -big], dtype=dtype), "c": torch.zeros(5, dtype=dtype)}
    assert first_non_finite(state) is None  # the largest finite values (float64's overflow its own sum) pass
    state["c"][3] = bad
    assert first_non_finite(state) == "c"
    state["a"][1, 2] = float("nan")
    assert first_non_finite(state) == "a"
    assert first_non_finite({"count": torch.tensor([7])}) is None


@pytest.mark.parametrize("name", list(NUMERIC_OPTIONS))
def test_real_architecture_forward_under_numeric_option(name):
    """The full network (ASPP and skip on) accepts each option; outputs match fp32 loosely."""
    options, _ = NUMERIC_OPTIONS[name]
    from mtl.train.runtime import autocast

    cfg = make_config({**BASE, "aspp": True, "decoder_skip": True, **options})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    reference = build_model(cfg.replace(amp="none", channels_last=False)).eval()
    reference.load_state_dict(model.state_dict())
    image = make_batch(size=32, batch=2)["image"]
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = reference(image)
        with autocast(cfg, torch.device("cpu")):
            outputs = model(to_device({"image": image}, torch.device("cpu"), cfg.channels_last)["image"])
    reduced = cfg.amp != "none"
    for task in ("semseg", "depth"):
        assert outputs[task].dtype == (torch.bfloat16 if cfg.amp == "bf16" else torch.float16 if reduced
                                       else torch.float32)
        scale = expected[task].abs().max().item()
        error = (outputs[task].float() - expected[task]).abs().max().item()
        assert error <= (0.05 if reduced else 1e-4) * scale, (task, error, scale)


def test_compiled_model_checkpoint_restores_into_a_plain_model(tmp_path):
    """mtl-train restores last.pt into the plain model before compiling it, so a checkpoint written while
    the compiled wrapper trains must carry the plain model's keys."""
    trainer = make_trainer(tmp_path, tiny_model(), compile=True)
    trainer.model = torch.compile(trainer.model)  # as mtl-train does, after the restore
    state = trainer.checkpoint_state()
    assert not any(key.startswith("_orig_mod.") for key in state["model"])
    resumed = make_trainer(tmp_path, TinyMultiTask(), compile=True)
    resumed.restore(state)
    for key, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[key.removeprefix("_orig_mod.")]), key


@pytest.mark.slow
def test_compile_trains_like_the_plain_path(plain_losses, tmp_path):
    """torch.compile (inductor; on a CPU it builds C++ kernels with the system compiler: tens of seconds)."""
    trainer = make_trainer(tmp_path, tiny_model(), compile=True)
    trainer.model = torch.compile(trainer.model)
    steps, val = losses_of(trainer, make_batch())
    plain_steps, plain_val = plain_losses
    assert steps == pytest.approx(plain_steps, rel=1e-4)
    assert val == pytest.approx(plain_val, rel=1e-4)


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")  # a CPU-only machine has nothing to pin into
def test_loader_options_deliver_the_same_batches(cache_dir):
    from mtl.data import build_datasets
    from support import TINY

    cfg = make_config({**TINY, "workers": 0})
    dataset = build_datasets(cfg)["train"]

    def epochs(config) -> list[dict[str, torch.Tensor]]:
        sampler = EpochSampler(len(dataset), config.seed)
        loader = make_loader(dataset, config, train=True, sampler=sampler)
        batches = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            batches += list(loader)
        return batches

    plain = epochs(cfg)
    optioned = epochs(cfg.replace(workers=1, pin_memory=True, persistent_workers=True))
    assert len(plain) == len(optioned) == 2 * (len(dataset) // cfg.batch_size)
    for a, b in zip(plain, optioned):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
