"""One typed schema of every hyperparameter.

CLI flags (``--key value`` and ``--key=value``, the form a W&B agent passes), YAML files and Python
keyword arguments all go through :class:`Config`, so a typo or a bad value fails the same way
everywhere: with the key, the value, what was expected and the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import math
import os
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A config key or value that cannot be accepted; the message names the key and what was expected."""


# ------------------------------------------------------------------------------------------ quoting values
# Error texts quote the value at fault; a value can be as large as the file it came from, so the quote is
# bounded: containers shortened level by level, strings past 80 characters cut in the middle, the whole cut
# to this length.
QUOTE_LIMIT = 400


class _BoundedRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple, self.maxset = 3, 4, 6, 6, 6
        self.maxstring = self.maxother = 80

    def repr_str(self, x: str, level: int) -> str:
        # Cut by characters, not by the length of the repr: a short key full of escapes is quoted whole.
        if len(x) <= self.maxstring:
            return repr(x)
        half = self.maxstring // 2
        return f"{x[:half]!r}...{x[-half:]!r} ({len(x)} characters)"

    def repr_int(self, x: int, level: int) -> str:
        # repr of an int past 4300 digits raises ValueError; a long one says how long it is instead.
        if x.bit_length() <= 128:
            return repr(x)
        return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"


_REPR = _BoundedRepr()


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, bounded in size whatever the value (see QUOTE_LIMIT)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted_path(path: Path | str) -> str:
    """A file's path for an error message: whole (the system bounds its length), so it can be copied."""
    return repr(str(path))


# ------------------------------------------------------------------------------------------ reading YAML
# Every YAML the suite reads from users (config files, profiles, entries, list values on a command line)
# goes through read_yaml_text. Such a file is a few hundred bytes of keys and values: aliases (*name) are
# refused, because nine levels of them expand 1 KB into a billion values; nesting and size are bounded, so
# neither the reader's recursion nor its memory can be exhausted.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32


class YamlRefused(yaml.YAMLError):
    """YAML that the suite does not read: an alias, nesting past MAX_YAML_DEPTH, or a value no type holds."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without aliases and with bounded nesting."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found the alias *{event.anchor}: aliases are not accepted (expected plain values; "
                "an alias can expand a small file into gigabytes)", event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_YAML_DEPTH} levels deep (expected keys and plain values)",
                self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_yaml_text(text: str, name: str = "<text>") -> Any:
    """``text`` parsed as YAML without aliases and with bounded nesting; yaml.YAMLError for anything else.
    ``name`` (a file) is what the error's position names."""
    loader = _BoundedLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    except yaml.YAMLError:
        raise
    except (ValueError, OverflowError) as exc:  # a date like 2001-13-45, an int past 4300 digits
        raise YamlRefused(f"a value cannot be read: {str(exc).split(';')[0]}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path) -> Any:
    """The YAML document of the text file ``path`` (read_yaml_text). OSError when it cannot be read;
    ValueError when it is larger than MAX_YAML_BYTES or not UTF-8 text; yaml.YAMLError when it is not YAML
    the suite reads."""
    with open(path, "rb") as file:
        data = file.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise ValueError(f"it is larger than {MAX_YAML_BYTES // 1024} KiB (expected a few keys and values)")
    if len(data) > 64 * 1024:  # no entry or profile is this large; not worth keeping
        return read_yaml_text(data.decode(), str(path))
    return copy.deepcopy(_parsed_yaml(data, str(path)))


@functools.lru_cache(maxsize=256)
def _parsed_yaml(data: bytes, name: str) -> Any:
    """Parsed once per content: planning reads each entry and profile again for every entry built on it
    (`list` parsed the same 20 files 600 times). Callers get a copy, free to change."""
    return read_yaml_text(data.decode(), name)


# Keys that say where and how a run executes rather than what it computes. They are left out of the
# run hash and of cmd.txt, so moving a run to another machine or folder does not change its identity.
RUN_INVARIANT_KEYS = frozenset(
    {
        "log_dir",
        "dataset_root",
        "device",
        "workers",
        "workers_validation",
        "num_threads",
        "pin_memory",
        "persistent_workers",
        "wandb_mode",
        "wandb_project",
        "wandb_entity",
        "wandb_group",
        "wandb_job_type",
        "wandb_tags",
        "wandb_run_id",
        "wandb_system_metrics",
        "wandb_console",
        "wandb_init_timeout_s",
        "wandb_finish_timeout_s",
        "progress",
        "checkpoint_interval_steps",
        "stop_after_epoch",  # a racing rung: where this attempt pauses, not what the run computes
        "pretrained_weights_url",  # a mirror of the same hash-checked file: where weights come from
    }
)


# Keys added after runs were first hashed. While one holds its default (which computes what the code did
# before the key existed) it stays out of the config hash, so every earlier config keeps its hash and its
# run directory; any other value is hashed like every key.
HASHED_ONLY_WHEN_SET = frozenset({"tasks", "loss_weighting", "dwa_temperature"})

# The two tasks, and the values of ``tasks``: both (the multi-task model) or one (a single-task baseline).
TASK_NAMES = ("semseg", "depth")
BOTH_TASKS = "semseg+depth"  # the default of ``tasks``
# Keys that say how the tasks are combined, not which model, data or optimisation a run has: a single-task
# baseline of a multi-task run is the run with the same values of every other key (report.multitask).
TASK_COMBINATION_KEYS = ("tasks", "loss_weighting", "dwa_temperature", "loss_weight_semseg", "loss_weight_depth",
                         "loss_weight_initial")
DWA_TEMPERATURE = 2.0  # Liu et al. 2019's temperature


# ------------------------------------------------------------------------------------------ bounds
# Every value that sizes memory, threads or files is bounded, and checked when the config is made: before a
# run directory, a dataset or a thread exists. Bounds from the machine are generous (they refuse the absurd,
# not a big GPU's batch); the others are ranges that no sane run leaves.
MAX_SEED = 2**32 - 1  # numpy seeds are 32-bit; one range for every seed
MAX_SPLIT_IMAGES = 1_000_000  # a synthetic split: 40 times MiniScapes' 25,000 images in all
MAX_LOSS_WEIGHT = 1000.0
MAX_CHANNELS = 4096  # 16 times ASPP's 256
MAX_TIMEOUT_S = 86400.0  # a day
# An atrous rate is the dilation and the padding of a 3x3 conv, in feature pixels: 256 at output stride 8 is
# already a 2048-pixel image.
AsppRate = Annotated[int, Field(ge=1, le=256)]
THREADS_RULE = "at most 4 per CPU core of the machine, and never fewer than 32"


def machine_cores() -> int:
    return os.cpu_count() or 1


def thread_limit() -> int:
    """Threads or loader processes a run may ask for. A few per core is harmless oversubscription; the floor
    keeps the template's 16 loader workers valid on a small machine."""
    return max(32, 4 * machine_cores())


def machine_memory() -> int:
    """Bytes of physical memory of this machine; 0 when unknown (memory is then not checked)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


# Lower estimates of the memory one pixel costs, from the peak resident memory of the smallest model (the
# template baseline, float32, CPU): a training step (forward and backward) took about 1.5 KB per input pixel
# at 512x512, an evaluation forward about 320 B at 1024x1024, the generator about 80 B at 1024x2048.
# Estimate = images x pixels per image x bytes per pixel, refused when it exceeds the machine's memory.
# Real use is higher (larger models, optimizer state, the loader), so what is refused cannot run here.
TRAIN_BYTES_PER_PIXEL = 1024
EVAL_BYTES_PER_PIXEL = 256
GENERATOR_BYTES_PER_PIXEL = 64


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return ""  # unreachable


def _either(*bounds: tuple[str, int, int, str]) -> str:
    """``"a at most N at this x, or b at most M at this y"`` from (name, limit, least, where) for each limit
    that is not below the least value its key takes."""
    return ", or ".join(f"{name} at most {limit:,}{where}" for name, limit, least, where in bounds if limit >= least)


def _memory_needs(cfg: Any, memory: int) -> list[tuple[str, int, str]]:
    """(what, estimated bytes, the bounds that would fit in ``memory`` bytes) of each memory-sizing step of a
    run of ``cfg``, in the order a run takes them."""
    needs = []
    if cfg.dataset == "synthetic":
        pixels = cfg.synthetic_height * cfg.synthetic_width
        needs.append((f"drawing one synthetic image of {cfg.synthetic_height}x{cfg.synthetic_width} pixels "
                      "(synthetic_height x synthetic_width)", pixels * GENERATOR_BYTES_PER_PIXEL,
                      _either(("synthetic_height x synthetic_width", memory // GENERATOR_BYTES_PER_PIXEL, 1,
                               " pixels"))))
    crop = cfg.aug_input_crop_size
    needs.append((f"a training batch of {cfg.batch_size} crops of {crop}x{crop} pixels (batch_size, "
                  "aug_input_crop_size)", cfg.batch_size * crop * crop * TRAIN_BYTES_PER_PIXEL,
                  _either(("batch_size", memory // (crop * crop * TRAIN_BYTES_PER_PIXEL), 1, " at this crop"),
                          ("aug_input_crop_size",
                           math.isqrt(memory // (cfg.batch_size * TRAIN_BYTES_PER_PIXEL)) // 32 * 32, 32,
                           " at this batch size"))))
    if cfg.dataset == "synthetic":  # validation images are cut to multiples of 32
        height, width = cfg.synthetic_height // 32 * 32, cfg.synthetic_width // 32 * 32
        images = f"images of {height}x{width} pixels (batch_size_validation, synthetic_height x synthetic_width)"
    else:  # their size is known only from the files: the smallest an image can be
        height = width = 32
        images = "images of at least 32x32 pixels (batch_size_validation)"
    bounds = [("batch_size_validation", memory // (height * width * EVAL_BYTES_PER_PIXEL), 1, " at this image size")]
    if cfg.dataset == "synthetic":
        pixels = memory // (cfg.batch_size_validation * EVAL_BYTES_PER_PIXEL)
        bounds.append(("synthetic_height x synthetic_width", pixels, 32 * 32, " pixels at this batch size"))
    needs.append((f"a validation batch of {cfg.batch_size_validation} {images}",
                  cfg.batch_size_validation * height * width * EVAL_BYTES_PER_PIXEL, _either(*bounds)))
    return needs


def memory_problem(cfg: Any) -> Optional[str]:
    """Why a run of ``cfg`` cannot fit this machine's memory (the first step that does not), or None."""
    memory = machine_memory()
    for what, needed, bound in _memory_needs(cfg, memory) if memory else []:
        if needed > memory:
            return (f"{what} needs about {_size(needed)} of memory by a lower estimate, more than the "
                    f"{_size(memory)} this machine has; expected {bound}")
    return None


class Config(BaseModel):
    """Every hyperparameter of a run. Defaults reproduce the template's deliberately sub-optimal baseline."""

    # allow_inf_nan=False: an infinite learning rate or loss weight can only diverge later.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    # --- experiment identity and reproducibility
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for weights init, data order and augmentation.")
    deterministic: bool = Field(True, description="Use deterministic algorithms (bitwise repeatable on CPU).")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d{1,4})?)$", description="auto, cpu, cuda or cuda:N.")
    num_threads: int = Field(0, ge=0, description=f"CPU threads for this run (0 = torch default); {THREADS_RULE}.")

    # --- data
    dataset: Literal["synthetic", "miniscapes"] = Field(
        "synthetic", description="synthetic (built on first use into a cache folder) or miniscapes."
    )
    dataset_root: Optional[str] = Field(
        None, description="Dataset folder; for synthetic, defaults to a cache folder keyed by its parameters."
    )
    synthetic_num_train: int = Field(240, ge=1, le=MAX_SPLIT_IMAGES, description="Synthetic dataset: training images.")
    synthetic_num_val: int = Field(40, ge=1, le=MAX_SPLIT_IMAGES, description="Synthetic dataset: validation images.")
    synthetic_num_test: int = Field(
        40, ge=1, le=MAX_SPLIT_IMAGES, description="Synthetic dataset: test images (labels kept for grading)."
    )
    synthetic_height: int = Field(128, ge=32, description="Synthetic dataset: image height in pixels.")
    synthetic_width: int = Field(256, ge=32, description="Synthetic dataset: image width in pixels.")
    synthetic_seed: int = Field(0, ge=0, le=MAX_SEED, description="Synthetic dataset: generator seed.")
    workers: int = Field(16, ge=0, description=f"Data loader worker processes for training; {THREADS_RULE}.")
    workers_validation: int = Field(
        4, ge=0, description=f"Data loader worker processes for validation/test; {THREADS_RULE}."
    )
    limit_train_batches: int = Field(0, ge=0, description="Stop each epoch after this many batches (0 = all).")

    # --- optimisation
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd or adam.")
    optimizer_lr: float = Field(0.01, gt=0, le=1e6, description="Initial learning rate.")
    optimizer_momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    optimizer_weight_decay: float = Field(1e-4, ge=0, le=1, description="L2 weight decay.")
    lr_scheduler: Literal["poly"] = Field("poly", description="Learning-rate schedule, stepped per epoch.")
    lr_scheduler_power: float = Field(0.9, gt=0, le=100, description="Power of the poly schedule.")
    num_epochs: int = Field(16, ge=1, le=100_000, description="Training epochs.")
    batch_size: int = Field(4, ge=1, description="Training batch size.")
    batch_size_validation: int = Field(8, ge=1, description="Validation and test batch size.")

    # --- augmentation
    aug_input_crop_size: int = Field(256, ge=32, description="Square training crop side (multiple of 32).")
    aug_geom_scale_min: float = Field(1.0, ge=0.01, le=100, description="Lower bound of random rescaling.")
    aug_geom_scale_max: float = Field(1.0, ge=0.01, le=100, description="Upper bound of random rescaling.")
    aug_geom_tilt_max_deg: float = Field(0.0, ge=0, le=45, description="Maximum random rotation in degrees.")
    aug_geom_wiggle_max_ratio: float = Field(0.0, ge=0, lt=0.5, description="Maximum perspective corner shift.")
    aug_geom_reflect: bool = Field(False, description="Random horizontal flips.")

    # --- losses
    loss_weight_semseg: float = Field(0.5, ge=0, le=MAX_LOSS_WEIGHT, description="Weight of the segmentation loss.")
    loss_weight_depth: float = Field(0.5, ge=0, le=MAX_LOSS_WEIGHT, description="Weight of the depth loss.")
    depth_unit: Literal["meters", "log"] = Field(
        "meters", description="Depth target: standardised metres or standardised log-metres."
    )
    depth_loss: Literal["l2", "l1"] = Field("l2", description="Depth regression loss over valid pixels.")
    tasks: Literal["semseg+depth", "semseg", "depth"] = Field(
        "semseg+depth", description="Tasks trained and evaluated: both, or one (a single-task baseline: the same "
        "encoder and decoder with one head and one loss, evaluated on its own metric; the grader is not defined).",
    )
    loss_weighting: Literal["fixed", "uncertainty", "dwa", "pcgrad"] = Field(
        "fixed", description="How the task losses (each times its loss_weight_<task>) are combined: fixed (their "
        "sum), uncertainty (Kendall et al. 2018, learned log-variances), dwa (Liu et al. 2019, dynamic weight "
        "average) or pcgrad (Yu et al. 2020, projecting conflicting gradients).",
    )
    dwa_temperature: float = Field(
        DWA_TEMPERATURE, gt=0, le=100, description="DWA: softmax temperature T of the weights (the paper's 2).")

    # --- model
    model_name: str = Field("deeplabv3p", description="Architecture name in the model registry.")
    model_encoder_name: Literal["resnet34"] = Field("resnet34", description="Encoder (ResNet-34 only).")
    pretrained: bool = Field(False, description="Initialise the encoder with ImageNet weights.")
    pretrained_weights_path: Optional[str] = Field(
        None, description="Explicit ImageNet state dict; default is torchvision's cache."
    )
    pretrained_weights_url: Optional[str] = Field(
        None,
        description="Where to download the ImageNet weights missing from torch hub's cache (a mirror of "
        "torchvision's file, named name-<sha256>.pth); default is torchvision's ResNet34_Weights.IMAGENET1K_V1 URL.",
    )
    dilation_layer2: bool = Field(False, description="Dilate layer2 instead of striding.")
    dilation_layer3: bool = Field(False, description="Dilate layer3 instead of striding.")
    dilation_layer4: bool = Field(False, description="Dilate layer4 instead of striding.")
    aspp: bool = Field(False, description="Real ASPP (off = the template's 1x1 pass-through).")
    aspp_rates: Optional[tuple[AsppRate, AsppRate, AsppRate]] = Field(
        None, description="Atrous rates; default suits the output stride (32: 3,6,9; 16: 6,12,18; 8: 12,24,36)."
    )
    aspp_channels: int = Field(256, ge=8, le=MAX_CHANNELS, description="ASPP output channels.")
    decoder_skip: bool = Field(False, description="DeepLabV3+ decoder with the 4x skip (off = pass-through).")
    decoder_skip_channels: int = Field(
        48, ge=1, le=MAX_CHANNELS, description="Channels of the reduced 4x skip features."
    )
    decoder_skip_2x: bool = Field(False, description="Decoder also fuses encoder features at 2x scale.")
    decoder_skip_1x: bool = Field(False, description="Decoder also fuses the input image at 1x scale.")
    decoder_se: bool = Field(False, description="Squeeze-and-excitation in the decoders.")
    distillation_decoder: Literal["template", "improved"] = Field(
        "template", description="Distillation decoder design."
    )
    loss_weight_initial: float = Field(
        0.5, ge=0, le=MAX_LOSS_WEIGHT,
        description="Distillation: weight of the initial-prediction (deep supervision) losses.",
    )

    # --- device options (off until measured)
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="Mixed precision.")
    channels_last: bool = Field(False, description="channels_last memory format.")
    compile: bool = Field(False, description="torch.compile the model.")
    cudnn_benchmark: bool = Field(False, description="cudnn.benchmark autotuning.")
    pin_memory: bool = Field(False, description="Pinned host memory for batches.")
    persistent_workers: bool = Field(False, description="Keep data loader workers between epochs.")

    # --- logging, checkpoints, visualisation
    log_dir: str = Field("runs/default", description="The run directory.")
    checkpoint_interval_steps: int = Field(0, ge=0, description="Also checkpoint every N steps (0 = per epoch).")
    stop_after_epoch: int = Field(
        0, ge=0, le=100_000, description="Pause after this epoch (a racing rung): checkpoint and end 'paused'; the "
        "same command with a later epoch (or 0 = all of them) continues it, bitwise as if never paused (the "
        "learning-rate schedule is always the full budget's)."
    )
    visualize_num_images: int = Field(4, ge=0, le=64, description="Validation images logged per visualisation.")
    visualize_interval_epochs: int = Field(1, ge=1, description="Log validation images every N epochs.")
    progress: Literal["auto", "rich", "plain", "none"] = Field("auto", description="Console progress display.")
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto = online with credentials, else offline."
    )
    wandb_project: Optional[str] = Field(None, description="W&B project (default: $WANDB_PROJECT or mtl-ablate).")
    wandb_entity: Optional[str] = Field(None, description="W&B entity.")
    wandb_group: Optional[str] = Field(None, description="W&B group (the ablation id).")
    wandb_job_type: Optional[str] = Field(None, description="W&B job type (the variant).")
    wandb_tags: tuple[str, ...] = Field((), description="W&B tags (the problem).")
    wandb_run_id: Optional[str] = Field(None, description="W&B run id (default: derived from the run directory).")
    wandb_system_metrics: bool = Field(True, description="Record system metrics (CPU, GPU, memory) in W&B.")
    wandb_console: bool = Field(True, description="Record the console output in W&B.")
    wandb_init_timeout_s: float = Field(
        30.0, gt=0, le=MAX_TIMEOUT_S,
        description="Seconds to reach the W&B server at start; past them the run continues offline.",
    )
    wandb_finish_timeout_s: float = Field(
        300.0, ge=0, le=MAX_TIMEOUT_S, description="Seconds the end of a run waits for W&B uploads (0 = no limit); "
        "what is left is uploaded later with `wandb sync`."
    )

    @field_validator("aspp_rates", "wandb_tags", mode="before")
    @classmethod
    def _split_comma_string(cls, value: Any) -> Any:
        # CLI and sweep arguments arrive as "3,6,9" or "[3, 6, 9]".
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("", "none", "null"):
                return None if text.lower() in ("none", "null") else ()
            if text.startswith("["):
                try:
                    return read_yaml_text(text)
                except yaml.YAMLError:
                    raise ValueError(f"{quoted(text)} is not a list; expected e.g. 3,6,9 or [3, 6, 9]") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _none_word(cls, value: Any, info: Any) -> Any:
        # "none"/"null" from a command line means None for the optional keys.
        if isinstance(value, str) and value.lower() in ("none", "null") and info.field_name in _OPTIONAL_KEYS:
            return None
        return value

    @field_validator("aug_input_crop_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32 (the encoder's largest stride), got {value}")
        return value

    @field_validator("num_threads", "workers", "workers_validation")
    @classmethod
    def _at_most_threads(cls, value: int) -> int:
        if value > thread_limit():
            raise ValueError(f"at most {thread_limit()} ({THREADS_RULE}; this machine has {machine_cores()} "
                             "CPU cores)")
        return value

    @model_validator(mode="after")
    def _check_memory(self) -> Config:
        problem = memory_problem(self)
        if problem:
            raise ConfigError(problem)
        return self

    @model_validator(mode="after")
    def _check_ranges(self) -> Config:
        if self.aug_geom_scale_min > self.aug_geom_scale_max:
            raise ValueError(
                f"aug_geom_scale_min ({self.aug_geom_scale_min}) must not exceed "
                f"aug_geom_scale_max ({self.aug_geom_scale_max})"
            )
        return self

    @model_validator(mode="after")
    def _check_decoder_switches(self) -> Config:
        # The extra decoder fusions and SE live in the DeepLabV3+ decoder; without it they would be ignored.
        if not self.decoder_skip:
            enabled = [k for k in ("decoder_skip_2x", "decoder_skip_1x", "decoder_se") if getattr(self, k)]
            if enabled:
                raise ConfigError(
                    f"config keys {', '.join(enabled)} need decoder_skip=true (they extend the DeepLabV3+ "
                    f"decoder; the pass-through decoder has no fusion to extend)"
                )
        return self

    @model_validator(mode="after")
    def _check_distillation_switch(self) -> Config:
        # distillation_decoder means nothing outside the distillation model; a non-default value is a mistake.
        if self.distillation_decoder != "template" and self.model_name != "distillation":
            raise ConfigError(
                f"config key 'distillation_decoder' is {quoted(self.distillation_decoder)} but model_name is "
                f"{quoted(self.model_name)}: it only applies to model_name 'distillation'"
            )
        return self

    @model_validator(mode="after")
    def _check_task_switches(self) -> Config:
        # A weighting method balances two tasks, distillation passes features between two tasks, and a DWA
        # temperature means nothing to another method: each of these set otherwise is a mistake.
        if self.tasks != BOTH_TASKS and self.loss_weighting != "fixed":
            raise ConfigError(f"config key 'loss_weighting' is {quoted(self.loss_weighting)} but tasks is "
                              f"{quoted(self.tasks)}: a weighting method balances two tasks; a single-task run has "
                              "one (use loss_weighting 'fixed')")
        if self.tasks != BOTH_TASKS and self.model_name == "distillation":
            raise ConfigError(f"model_name 'distillation' needs both tasks (it passes features between them), "
                              f"but tasks is {quoted(self.tasks)}")
        if self.dwa_temperature != DWA_TEMPERATURE and self.loss_weighting != "dwa":
            raise ConfigError(f"config key 'dwa_temperature' is {self.dwa_temperature} but loss_weighting is "
                              f"{quoted(self.loss_weighting)}: it only applies to loss_weighting 'dwa'")
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def output_stride(self) -> int:
        return 32 // (2 ** sum((self.dilation_layer2, self.dilation_layer3, self.dilation_layer4)))

    @property
    def dilation_flags(self) -> tuple[bool, bool, bool]:
        return (self.dilation_layer2, self.dilation_layer3, self.dilation_layer4)

    @property
    def task_names(self) -> tuple[str, ...]:
        """The tasks this run trains, in TASK_NAMES order."""
        return TASK_NAMES if self.tasks == BOTH_TASKS else (self.tasks,)

    def hyperparameters(self) -> dict[str, Any]:
        """The keys that define what a run computes (run-invariant keys left out), JSON-friendly."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in RUN_INVARIANT_KEYS}

    def config_hash(self, length: int = 8) -> str:
        """A short stable hash of the hyperparameters: the same config always lands in the same place."""
        defaults = {key: Config.model_fields[key].default for key in HASHED_ONLY_WHEN_SET}
        hashed = {k: v for k, v in self.hyperparameters().items() if k not in defaults or v != defaults[k]}
        text = json.dumps(hashed, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    def to_yaml(self, exclude: tuple[str, ...] = ()) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude=set(exclude)), sort_keys=False)

    def replace(self, **overrides: Any) -> Config:
        return make_config({**self.model_dump(), **overrides})


FIELD_NAMES = tuple(Config.model_fields)
_OPTIONAL_KEYS = frozenset(k for k, f in Config.model_fields.items() if not f.is_required() and f.default is None)


# pydantic's bound errors, as the bound reads in a message.
_BOUND_WORDS = {"less_than_equal": ("le", "at most"), "less_than": ("lt", "less than"),
                "greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than")}


def _describe_expected(key: str, error: Mapping[str, Any]) -> str:
    field = Config.model_fields.get(key)
    if error.get("type") in ("missing", "too_long") and len(error.get("loc", ())) > 1:
        return "exactly three values, e.g. 3,6,9"  # a fixed-length tuple key given too few or too many
    if error.get("type") == "literal_error":
        return "one of " + error["ctx"]["expected"]
    if error.get("type") == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if error.get("type") == "string_pattern_mismatch" and field is not None:
        return f"{field.description} (a text matching {error['ctx']['pattern']})"
    if error.get("type") in _BOUND_WORDS:
        limit, words = _BOUND_WORDS[error["type"]]
        bound = f"{words} {error['ctx'][limit]}"
        return f"{bound} ({field.description})" if field is not None and field.description else bound
    message = error["msg"][0].lower() + error["msg"][1:]
    if field is not None and field.description:
        return f"{message} ({field.description})"
    return message


def did_you_mean(word: str, choices: Any) -> str:
    """``"; did you mean 'a', 'b'?"`` with the choices closest to ``word``, or "" when none is close."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def unknown_key_message(key: str, source: str = "") -> str:
    where = f" in {source}" if source else ""
    return f"unknown config key {quoted(key)}{where}{did_you_mean(key[:QUOTE_LIMIT], FIELD_NAMES)}"


def value_problem(key: str, value: Any, error: Mapping[str, Any]) -> str:
    """One pydantic error of config key ``key`` (``error["loc"]`` starting at the key) as a sentence."""
    return f"config key {key!r} got {quoted(value)}: expected {_describe_expected(key, error)}"


def format_config_value(value: Any, separator: str = ",", float_format: str = "") -> str:
    """A config value as text, spelled as on a command line: none, true/false, list items joined by
    ``separator``; floats exact by default (``float_format="g"`` for six significant digits, as tables show)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return separator.join(format_config_value(v, separator, float_format) for v in value)
    if isinstance(value, float):
        return format(value, float_format)
    return str(value)


def make_config(values: dict[str, Any] | None = None, source: str = "", **kwargs: Any) -> Config:
    """Build a Config from a mapping, raising ConfigError with key, value, expectation and closest key."""
    values = {**(values or {}), **kwargs}
    for key in values:
        if key not in Config.model_fields:
            raise ConfigError(unknown_key_message(str(key), source))
    try:
        return Config(**values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"]) or "(config)"
            top = str(error["loc"][0]) if error["loc"] else ""
            value = values.get(top, error.get("input"))
            if top:
                lines.append(value_problem(top, value, error))
            else:
                lines.append(f"config: {_describe_expected(key, error)}")
        where = f" ({source})" if source else ""
        raise ConfigError("invalid config" + where + ":\n  " + "\n  ".join(lines)) from None


def load_yaml(path: str | Path, extra_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping of config keys (not yet validated, so it can be merged with overrides);
    ``extra_keys`` are sections the caller handles itself (a profile's ``slurm:``)."""
    path = Path(path)
    try:
        data = read_yaml_file(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {quoted_path(path)} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {quoted_path(path)} is not valid YAML: {exc}") from None
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte, a text that is not UTF-8, too large
        raise ConfigError(f"config file {quoted_path(path)} cannot be read as a YAML text file: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {quoted_path(path)} must hold a mapping of keys, got {type(data).__name__}")
    for key in data:
        if key not in Config.model_fields and key not in extra_keys:
            raise ConfigError(unknown_key_message(str(key), str(path)))
    return data


def parse_cli_overrides(argv: list[str]) -> dict[str, Any]:
    """Turn ``--key value`` / ``--key=value`` / bare ``--flag`` (true for bools) into a mapping."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {quoted(token)}: expected --key value or --key=value")
        body = token[2:]
        if "=" in body:
            key, value = body.split("=", 1)
            i += 1
        else:
            key = body
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            field = Config.model_fields.get(key.replace("-", "_"))
            if nxt is None or nxt.startswith("--"):
                if field is not None and field.annotation is bool:
                    value = "true"
                    i += 1
                else:
                    raise ConfigError(f"config key {quoted(key)} has no value: expected --{key[:QUOTE_LIMIT]} VALUE")
            else:
                value = nxt
                i += 2
        key = key.replace("-", "_")
        if key not in Config.model_fields:
            raise ConfigError(unknown_key_message(key, "command line"))
        values[key] = value
    return values


def config_from_cli(argv: list[str]) -> Config:
    """``[--config FILE ...] --key value ...``: YAML files first (in order), then CLI keys on top."""
    files, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 2
        elif argv[i].startswith("--config="):
            files.append(argv[i].split("=", 1)[1])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    values: dict[str, Any] = {}
    for path in files:
        values.update(load_yaml(path))
    values.update(parse_cli_overrides(rest))
    return make_config(values, source="command line")


def cli_args(config: Config, keys: list[str] | None = None) -> list[str]:
    """The ``--key=value`` arguments that rebuild ``config`` (all keys, or just ``keys``)."""
    data = config.model_dump(mode="json")
    return [f"--{key}={format_config_value(data[key])}" for key in keys or list(data)]


def help_text() -> str:
    lines = []
    for name, field in Config.model_fields.items():
        lines.append(f"  --{name:<28} {field.description} [default: {field.default!r}]")
    return "\n".join(lines)
