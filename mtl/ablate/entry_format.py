"""The ablation entry format (its models and JSON Schema): one YAML file per assignment question under
``ablations/``; :mod:`mtl.ablate.entry` reads the files.

An entry names the question it answers, a base (a profile, or the winning config of an earlier entry),
fixed overrides, a grid or an explicit list of variants, seeds, how runs are ranked and what the report
shows. Every config value goes through its type in :class:`mtl.config.Config` (a model derived from it
with every key optional), so ``1e-4`` (a string to YAML) becomes a float and a bad value fails before
anything runs, naming the file, the dotted key and what was expected. The Config's cross-key rules
apply when the entry meets its base, in the plan.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from mtl.config import MAX_SEED, Config, format_config_value, quoted, unknown_key_message
from mtl.partial_config import ConfigOverrides, config_value_type, partial_config_model

from .race import RaceSettings

# Entry ids and profile and variant names become file and folder names: each pattern admits one path
# component only (no '/', no NUL, never '.' or '..', no leading '.').
ENTRY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"
# An id names runs/<id>/ and its .profile and .logs beside the runs; a file name holds 255 bytes.
MAX_ENTRY_ID_LENGTH = 100
ENTRY_ID_RULE = f"letters, digits, '_', '-' and single dots, at most {MAX_ENTRY_ID_LENGTH} characters"
BEST_OF_PREFIX = "best of "
# "<entry id> variant <variant name>": a prescribed variant of an earlier entry, whatever won there.
VARIANT_OF_WORD = " variant "
PROFILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
# Variant names become directory names and W&B job types.
VARIANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$"
DEFAULT_RANK_METRIC = "val/grader"
# The figures an entry may ask for, and what each shows (the write-up's caption); report.writeup draws them.
FIGURE_KINDS = {
    "curves": "Validation curves of every run",
    "bars": "Metrics at the best-grader validation step per variant (mean and standard deviation over seeds)",
    "qualitative": "Test predictions of the best run of each variant",
    "depth_histogram": "Depth distribution of ground truth and predictions, in metres and log-metres",
}
# One of the names above; made at run time, so a type checker knows it as a str.
if TYPE_CHECKING:
    FigureKind = str
else:
    FigureKind = Literal[tuple(FIGURE_KINDS)]


class EntryError(ValueError):
    """An entry (or profile) that cannot be used; the message names the file, the key and the expectation."""

    def __init__(self, file: str | Path, key: str, problem: str):
        self.file, self.key, self.problem = str(file), key, problem
        where = f"key {quoted(key)}" if key else "(whole file)"
        super().__init__(f"{self.file}: {where}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scaled(_Strict):
    """A grid value relative to the base: the base value of the key times ``times`` (e.g. a bracket around a
    learning rate inherited from an earlier entry)."""

    times: float = Field(gt=0, description="Multiplier applied to the key's value in the base config.")


def _grid_member(value: Any) -> str:
    # A mapping can only be a relative value: no config key takes one.
    return "scaled" if isinstance(value, (dict, Scaled)) else "value"


def _grid_values(key: str) -> Any:
    value: Any = Annotated[config_value_type(key), Tag("value")]  # a type made at run time, not a type alias
    return list[Annotated[Union[Annotated[Scaled, Tag("scaled")], value], Discriminator(_grid_member)]]


# Config key -> its values in a grid: values of the key's type, or {times: x} relative to the base.
# Made at run time, so a type checker knows it as a model with unknown fields: a BaseModel.
if TYPE_CHECKING:
    ConfigGrid = BaseModel
else:
    ConfigGrid = partial_config_model(
        "ConfigGrid", "Config keys and the values each takes; the runs are the cartesian product.", _grid_values,
        schema_extra={"minProperties": 1}, min_length=1,
    )


class Variant(_Strict):
    """A named variant with its validated config values (as held by an :class:`Entry`)."""

    name: str = Field(
        pattern=VARIANT_NAME_PATTERN, max_length=64, description="Variant name (run directory prefix, W&B job type)."
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config keys set by this variant.")

    @field_validator("name")
    @classmethod
    def _not_null_word(cls, name: str) -> str:
        # The name travels as --wandb_job_type=<name>, where "none"/"null" would mean "no job type".
        if name.lower() in ("none", "null"):
            raise ValueError(f"{quoted(name)} is reserved (it reads as 'no value' on a command line); "
                             "pick another name")
        return name


class VariantSpec(Variant):
    """A variant as written in an entry file."""

    # The keys as given, where Variant holds them converted: pydantic lets a subclass re-type a field, mypy's
    # override check does not.
    overrides: ConfigOverrides = Field(  # type: ignore[assignment]
        default_factory=ConfigOverrides, description="Config keys set by this variant."
    )


class RankBy(_Strict):
    metric: str = Field(DEFAULT_RANK_METRIC, pattern=r"^val/", description="Validation metric a run is ranked by.")
    mode: Literal["max", "min"] = Field("max", description="Whether higher (max) or lower (min) is better.")


class ReportSpec(_Strict):
    columns: list[str] = Field(default_factory=list, description="Config keys shown as table columns.")
    figures: list[FigureKind] = Field(
        default_factory=lambda: ["curves", "bars"], description="Figures the report draws for this entry."
    )

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: list[str]) -> list[str]:
        for column in columns:
            if column not in Config.model_fields:
                raise ValueError(unknown_key_message(column))
        return columns


class EntryFile(_Strict):
    """What an ``ablations/<id>.yaml`` file holds."""

    model_config = ConfigDict(extra="forbid", title="mtl-ablate entry")

    question: str = Field(min_length=1, description="The assignment question, paraphrased.")
    item: str = Field(
        pattern=r"^\d+(\.\d+)*[a-z]?$",
        description="Assignment item numbering, e.g. 1.1b (quote it when YAML would read a number: '1.3').",
    )
    order: Optional[str] = Field(
        None, min_length=1, description="Sort key; default derived from the file name (problemN) and the item."
    )
    base: str = Field(
        description="A profile name (quick, full, ...); 'best of <entry id>': the winning config of an earlier "
        "entry; or '<entry id> variant <variant name>': a named variant of an earlier entry, whichever won "
        "(e.g. 'problem1.dilation variant FFT', 'problem1.imagenet_init variant pretrained=true')."
    )
    base_reason: Optional[str] = Field(
        None, min_length=1,
        description="Why this base (shown by `mtl-ablate show`), e.g. what the assignment prescribes.",
    )
    overrides: ConfigOverrides = Field(
        default_factory=ConfigOverrides, description="Config keys fixed for every run of this entry."
    )
    grid: Optional[ConfigGrid] = Field(
        None, description="Config key -> list of values; the runs are the cartesian product."
    )
    variants: Optional[list[VariantSpec]] = Field(None, min_length=1, description="Explicit list of named variants.")
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="Seeds; every variant runs once per seed."
    )
    rank_by: RankBy = Field(default_factory=RankBy, description="How the winner of this entry is chosen.")
    single_task_baselines: Optional[str] = Field(
        None, pattern=ENTRY_ID_PATTERN, max_length=MAX_ENTRY_ID_LENGTH,
        description="An entry (this one too) whose single-task runs (tasks: semseg, tasks: depth) are the baselines "
        "of this entry's multi-task runs: the report shows Delta_m, the mean relative gain over them. A run's "
        "baseline for a task has the same seed and the same config except the keys of how tasks are combined "
        "(tasks, loss_weighting, dwa_temperature, loss_weight_*): same architecture, profile and budget.")
    racing: Optional[RaceSettings] = Field(
        None, description="Race this entry (docs/DESIGN.md §7.2): variants train to rungs, the clearly behind are "
        "pruned, seeds are added where they can change the answer. Off unless set here, in the profile or by "
        "`run --race`; `racing: {}` races with the defaults.")
    report: ReportSpec = Field(default_factory=ReportSpec, description="What the report shows for this entry.")

    @field_validator("base")
    @classmethod
    def _base_form(cls, base: str) -> str:
        if base.startswith(BEST_OF_PREFIX):
            if not re.match(ENTRY_ID_PATTERN, base[len(BEST_OF_PREFIX):]):
                raise ValueError(f"'best of' needs an entry id after it, got {quoted(base)}")
        elif VARIANT_OF_WORD in base:
            entry_id, _, variant = base.partition(VARIANT_OF_WORD)
            if not re.match(ENTRY_ID_PATTERN, entry_id) or not re.match(VARIANT_NAME_PATTERN, variant):
                raise ValueError(f"expected '<entry id> variant <variant name>', got {quoted(base)}")
        elif not re.match(PROFILE_NAME_PATTERN, base):
            raise ValueError(f"expected a profile name, 'best of <entry id>' or '<entry id> variant <variant name>', "
                             f"got {quoted(base)}")
        return base

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: Any) -> Any:
        # Each key's list needs a value (min_length); the grid itself needs a key.
        if grid is not None and not (grid.model_fields_set if isinstance(grid, BaseModel) else grid):
            raise ValueError("a grid needs at least one key")
        return grid

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if any(not 0 <= s <= MAX_SEED for s in seeds):
            raise ValueError(f"seeds must be in 0..{MAX_SEED}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _grid_or_variants(self) -> EntryFile:
        if self.grid is not None and self.variants is not None:
            raise ValueError("give either 'grid' or 'variants', not both")
        if self.variants is not None:
            names = [v.name for v in self.variants]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"variant names must be distinct; repeated: {', '.join(duplicates)}")
        return self

    @property
    def best_of(self) -> Optional[str]:
        """The earlier entry whose winner is the base, or None when the base is a profile or a named variant."""
        return self.base[len(BEST_OF_PREFIX):] if self.base.startswith(BEST_OF_PREFIX) else None

    @property
    def variant_of(self) -> Optional[tuple[str, str]]:
        """(entry id, variant name) when the base is a prescribed variant of an earlier entry, else None."""
        if self.base.startswith(BEST_OF_PREFIX) or VARIANT_OF_WORD not in self.base:
            return None
        entry_id, _, variant = self.base.partition(VARIANT_OF_WORD)
        return entry_id, variant

    @property
    def base_entry(self) -> Optional[str]:
        """The earlier entry the base comes from (its winner or a named variant), None for a profile."""
        return self.best_of or (self.variant_of[0] if self.variant_of else None)

    @property
    def base_kind(self) -> str:
        """In words: "profile", "winner of <entry>" or "prescribed variant <name> of <entry>"."""
        if self.best_of:
            return f"winner of {self.best_of}"
        if self.variant_of:
            return f"prescribed variant {self.variant_of[1]} of {self.variant_of[0]}"
        return f"profile {self.base}"


class Entry(EntryFile):
    """A validated entry, with its id (the file name without ``.yaml``) and the file it came from."""

    # The config values of the file, validated and converted, in the order the file gives them. (Re-typed
    # fields of EntryFile: pydantic lets a subclass re-type a field, mypy's override check does not.)
    overrides: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]
    grid: Optional[dict[str, list[Any]]] = None  # type: ignore[assignment]
    variants: Optional[list[Variant]] = None  # type: ignore[assignment]
    id: str
    path: Path

    @property
    def problem(self) -> str:
        """The problem tag (``problem1`` for ``problem1.lr``): the W&B tag of its runs."""
        return self.id.split(".", 1)[0]

    @property
    def ablations_dir(self) -> Path:
        return self.path.parent

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.order or default_order(self.id, self.item), self.id)

    def variant_names(self) -> Optional[list[str]]:
        """The variant names as the plan spells them, when they do not depend on the base (no relative grid
        value); None otherwise."""
        if self.variants is not None:
            return [v.name for v in self.variants]
        if self.grid is None:
            return ["base"]
        if any(isinstance(v, Scaled) for values in self.grid.values() for v in values):
            return None
        return [grid_point_name(dict(zip(self.grid, combo))) for combo in itertools.product(*self.grid.values())]

    def run_count(self) -> int:
        """Runs per profile: variants times seeds (independent of the base)."""
        if self.grid is not None:
            variants = 1
            for values in self.grid.values():
                variants *= len(values)
        else:
            variants = len(self.variants) if self.variants is not None else 1
        return variants * len(self.seeds)


# ---------------------------------------------------------------------------------------------- helpers


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a valid entry id: one safe path component (see ENTRY_ID_PATTERN)."""
    return len(text) <= MAX_ENTRY_ID_LENGTH and re.match(ENTRY_ID_PATTERN, text) is not None


# Characters a grid value may hold that a run directory's name must not: '/' (a path separator) and control
# characters (NUL ends a path; the others hide in listings). '%' is escaped too, so that the escaping can
# be undone and two different values never share a name.
_UNSAFE_IN_NAME = re.compile(r"[%/\x00-\x1f\x7f]")


def name_part(text: str) -> str:
    """``text`` fit for a variant name, which becomes a folder name: the characters a folder name must not
    hold written as ``%XX`` (``../w.pth`` -> ``..%2Fw.pth``); text without them is unchanged."""
    return _UNSAFE_IN_NAME.sub(lambda m: f"%{ord(m.group()):02X}", text)


def grid_point_name(point: dict[str, Any]) -> str:
    """The variant name of a grid point: ``key=value`` joined by commas, list items by '+', each value
    made fit for a folder name (:func:`name_part`); it starts with a key, so never with '.'."""
    return ",".join(f"{key}={name_part(format_config_value(value, '+'))}" for key, value in point.items())


def default_order(entry_id: str, item: str) -> str:
    """A sort key from the file name's problem number and the item, numbers zero-padded ("001/001.001b")."""
    match = re.match(r"^problem(\d+)", entry_id)
    problem = int(match.group(1)) if match else 999
    padded = re.sub(r"\d+", lambda m: f"{int(m.group()):03d}", item)
    return f"{problem:03d}/{padded}"


# ---------------------------------------------------------------------------------------------- JSON Schema


def entry_json_schema() -> dict[str, Any]:
    """JSON Schema of the entry format, for editors (config keys and their types included)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **EntryFile.model_json_schema()}


def entry_json_schema_text() -> str:
    return json.dumps(entry_json_schema(), indent=2, sort_keys=False) + "\n"
