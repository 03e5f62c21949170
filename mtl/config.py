"""One typed schema of every hyperparameter.

CLI flags (``--key value`` and ``--key=value``, the form a W&B agent passes), YAML files and Python
keyword arguments all go through :class:`Config`, so a typo or a bad value fails the same way
everywhere: with the key, the value, what was expected and the closest valid key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

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
        "pretrained_weights_url",  # a mirror of the same hash-checked file: where weights come from
    }
)


class Config(BaseModel):
    """Every hyperparameter of a run. Defaults reproduce the template's deliberately sub-optimal baseline."""

    # allow_inf_nan=False: an infinite learning rate or loss weight can only diverge later.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    # --- experiment identity and reproducibility
    seed: int = Field(0, ge=0, description="Seed for weights init, data order and augmentation.")
    deterministic: bool = Field(True, description="Use deterministic algorithms (bitwise repeatable on CPU).")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    num_threads: int = Field(0, ge=0, description="CPU threads for this run (0 = torch default).")

    # --- data
    dataset: Literal["synthetic", "miniscapes"] = Field(
        "synthetic", description="synthetic (built on first use into a cache folder) or miniscapes."
    )
    dataset_root: Optional[str] = Field(
        None, description="Dataset folder; for synthetic, defaults to a cache folder keyed by its parameters."
    )
    synthetic_num_train: int = Field(240, ge=1, description="Synthetic dataset: training images.")
    synthetic_num_val: int = Field(40, ge=1, description="Synthetic dataset: validation images.")
    synthetic_num_test: int = Field(40, ge=1, description="Synthetic dataset: test images (labels kept for grading).")
    synthetic_height: int = Field(128, ge=32, description="Synthetic dataset: image height in pixels.")
    synthetic_width: int = Field(256, ge=32, description="Synthetic dataset: image width in pixels.")
    synthetic_seed: int = Field(0, ge=0, description="Synthetic dataset: generator seed.")
    workers: int = Field(16, ge=0, description="Data loader worker processes for training.")
    workers_validation: int = Field(4, ge=0, description="Data loader worker processes for validation/test.")
    limit_train_batches: int = Field(0, ge=0, description="Stop each epoch after this many batches (0 = all).")

    # --- optimisation
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd or adam.")
    optimizer_lr: float = Field(0.01, gt=0, description="Initial learning rate.")
    optimizer_momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    optimizer_weight_decay: float = Field(1e-4, ge=0, description="L2 weight decay.")
    lr_scheduler: Literal["poly"] = Field("poly", description="Learning-rate schedule, stepped per epoch.")
    lr_scheduler_power: float = Field(0.9, gt=0, description="Power of the poly schedule.")
    num_epochs: int = Field(16, ge=1, description="Training epochs.")
    batch_size: int = Field(4, ge=1, description="Training batch size.")
    batch_size_validation: int = Field(8, ge=1, description="Validation and test batch size.")

    # --- augmentation
    aug_input_crop_size: int = Field(256, ge=32, description="Square training crop side (multiple of 32).")
    aug_geom_scale_min: float = Field(1.0, gt=0, description="Lower bound of random rescaling.")
    aug_geom_scale_max: float = Field(1.0, gt=0, description="Upper bound of random rescaling.")
    aug_geom_tilt_max_deg: float = Field(0.0, ge=0, le=45, description="Maximum random rotation in degrees.")
    aug_geom_wiggle_max_ratio: float = Field(0.0, ge=0, lt=0.5, description="Maximum perspective corner shift.")
    aug_geom_reflect: bool = Field(False, description="Random horizontal flips.")

    # --- losses
    loss_weight_semseg: float = Field(0.5, ge=0, description="Weight of the segmentation loss.")
    loss_weight_depth: float = Field(0.5, ge=0, description="Weight of the depth loss.")
    depth_unit: Literal["meters", "log"] = Field(
        "meters", description="Depth target: standardised metres or standardised log-metres."
    )
    depth_loss: Literal["l2", "l1"] = Field("l2", description="Depth regression loss over valid pixels.")

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
    aspp_rates: Optional[tuple[int, int, int]] = Field(
        None, description="Atrous rates; default suits the output stride (32: 3,6,9; 16: 6,12,18; 8: 12,24,36)."
    )
    aspp_channels: int = Field(256, ge=8, description="ASPP output channels.")
    decoder_skip: bool = Field(False, description="DeepLabV3+ decoder with the 4x skip (off = pass-through).")
    decoder_skip_channels: int = Field(48, ge=1, description="Channels of the reduced 4x skip features.")
    decoder_skip_2x: bool = Field(False, description="Decoder also fuses encoder features at 2x scale.")
    decoder_skip_1x: bool = Field(False, description="Decoder also fuses the input image at 1x scale.")
    decoder_se: bool = Field(False, description="Squeeze-and-excitation in the decoders.")
    distillation_decoder: Literal["template", "improved"] = Field(
        "template", description="Distillation decoder design."
    )
    loss_weight_initial: float = Field(
        0.5, ge=0, description="Distillation: weight of the initial-prediction (deep supervision) losses."
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
    visualize_num_images: int = Field(4, ge=0, description="Validation images logged per visualisation.")
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
        30.0, gt=0, description="Seconds to reach the W&B server at start; past them the run continues offline."
    )
    wandb_finish_timeout_s: float = Field(
        300.0, ge=0, description="Seconds the end of a run waits for W&B uploads (0 = no limit); "
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
                    return yaml.safe_load(text)
                except yaml.YAMLError:
                    raise ValueError(f"{text!r} is not a list; expected e.g. 3,6,9 or [3, 6, 9]") from None
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
                f"config key 'distillation_decoder' is {self.distillation_decoder!r} but model_name is "
                f"{self.model_name!r}: it only applies to model_name 'distillation'"
            )
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def output_stride(self) -> int:
        return 32 // (2 ** sum((self.dilation_layer2, self.dilation_layer3, self.dilation_layer4)))

    @property
    def dilation_flags(self) -> tuple[bool, bool, bool]:
        return (self.dilation_layer2, self.dilation_layer3, self.dilation_layer4)

    def hyperparameters(self) -> dict[str, Any]:
        """The keys that define what a run computes (run-invariant keys left out), JSON-friendly."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in RUN_INVARIANT_KEYS}

    def config_hash(self, length: int = 8) -> str:
        """A short stable hash of the hyperparameters: the same config always lands in the same place."""
        text = json.dumps(self.hyperparameters(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    def to_yaml(self, exclude: tuple[str, ...] = ()) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude=set(exclude)), sort_keys=False)

    def replace(self, **overrides: Any) -> Config:
        return make_config({**self.model_dump(), **overrides})


FIELD_NAMES = tuple(Config.model_fields)
_OPTIONAL_KEYS = frozenset(k for k, f in Config.model_fields.items() if not f.is_required() and f.default is None)


def _describe_expected(key: str, error: Mapping[str, Any]) -> str:
    field = Config.model_fields.get(key)
    if error.get("type") in ("missing", "too_long") and len(error.get("loc", ())) > 1:
        return "exactly three values, e.g. 3,6,9"  # a fixed-length tuple key given too few or too many
    if error.get("type") == "literal_error":
        return "one of " + error["ctx"]["expected"]
    if error.get("type") == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
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
    return f"unknown config key {key!r}{where}{did_you_mean(key, FIELD_NAMES)}"


def value_problem(key: str, value: Any, error: Mapping[str, Any]) -> str:
    """One pydantic error of config key ``key`` (``error["loc"]`` starting at the key) as a sentence."""
    return f"config key {key!r} got {value!r}: expected {_describe_expected(key, error)}"


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
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte, or a text that is not UTF-8
        raise ConfigError(f"config file {str(path)!r} cannot be read as a YAML text file: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}")
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
            raise ConfigError(f"unexpected argument {token!r}: expected --key value or --key=value")
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
                    raise ConfigError(f"config key {key!r} has no value: expected --{key} VALUE")
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
