"""The ablation entry format: one YAML file per assignment question under ``ablations/``.

An entry names the question it answers, a base (a profile, or the winning config of an earlier entry),
fixed overrides, a grid or an explicit list of variants, seeds, how runs are ranked and what the report
shows. Every config value goes through its type in :class:`mtl.config.Config` (a model derived from it
with every key optional), so ``1e-4`` (a string to YAML) becomes a float and a bad value fails before
anything runs, naming the file, the dotted key and what was expected. The Config's cross-key rules
apply when the entry meets its base, in the plan.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from mtl.config import (
    Config,
    ConfigError,
    ConfigOverrides,
    config_value_type,
    did_you_mean,
    load_yaml,
    partial_config_model,
    unknown_key_message,
    value_problem,
)

ENTRY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"
BEST_OF_PREFIX = "best of "
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
FigureKind = Literal[tuple(FIGURE_KINDS)]  # type: ignore[valid-type]


class EntryError(ValueError):
    """An entry (or profile) that cannot be used; the message names the file, the key and the expectation."""

    def __init__(self, file: str | Path, key: str, problem: str):
        self.file, self.key, self.problem = str(file), key, problem
        where = f"key {key!r}" if key else "(whole file)"
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
    value = Annotated[config_value_type(key), Tag("value")]
    return list[Annotated[Union[Annotated[Scaled, Tag("scaled")], value], Discriminator(_grid_member)]]


# Config key -> its values in a grid: values of the key's type, or {times: x} relative to the base.
ConfigGrid = partial_config_model(
    "ConfigGrid", "Config keys and the values each takes; the runs are the cartesian product.", _grid_values,
    schema_extra={"minProperties": 1}, min_length=1,
)


class Variant(_Strict):
    """A named variant with its validated config values (as held by an :class:`Entry`)."""

    name: str = Field(pattern=VARIANT_NAME_PATTERN, max_length=64, description="Variant name (run directory prefix, W&B job type).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config keys set by this variant.")

    @field_validator("name")
    @classmethod
    def _not_null_word(cls, name: str) -> str:
        # The name travels as --wandb_job_type=<name>, where "none"/"null" would mean "no job type".
        if name.lower() in ("none", "null"):
            raise ValueError(f"{name!r} is reserved (it reads as 'no value' on a command line); pick another name")
        return name


class VariantSpec(Variant):
    """A variant as written in an entry file."""

    overrides: ConfigOverrides = Field(default_factory=ConfigOverrides, description="Config keys set by this variant.")


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
    item: str = Field(pattern=r"^\d+(\.\d+)*[a-z]?$", description="Assignment item numbering, e.g. 1.1b (quote it when YAML would read a number: '1.3').")
    order: Optional[str] = Field(
        None, min_length=1, description="Sort key; default derived from the file name (problemN) and the item."
    )
    base: str = Field(
        description="A profile name (quick, full, ...) or 'best of <entry id>': the winning config of an earlier entry."
    )
    overrides: ConfigOverrides = Field(
        default_factory=ConfigOverrides, description="Config keys fixed for every run of this entry."
    )
    grid: Optional[ConfigGrid] = Field(  # type: ignore[valid-type]
        None, description="Config key -> list of values; the runs are the cartesian product."
    )
    variants: Optional[list[VariantSpec]] = Field(None, min_length=1, description="Explicit list of named variants.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Seeds; every variant runs once per seed.")
    rank_by: RankBy = Field(default_factory=RankBy, description="How the winner of this entry is chosen.")
    report: ReportSpec = Field(default_factory=ReportSpec, description="What the report shows for this entry.")

    @field_validator("base")
    @classmethod
    def _base_form(cls, base: str) -> str:
        if base.startswith(BEST_OF_PREFIX):
            if not re.match(ENTRY_ID_PATTERN, base[len(BEST_OF_PREFIX):]):
                raise ValueError(f"'best of' needs an entry id after it, got {base!r}")
        elif not re.match(PROFILE_NAME_PATTERN, base):
            raise ValueError(f"expected a profile name or 'best of <entry id>', got {base!r}")
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
        if any(s < 0 for s in seeds):
            raise ValueError("seeds must be >= 0")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _grid_or_variants(self) -> "EntryFile":
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
        """The earlier entry whose winner is the base, or None when the base is a profile."""
        return self.base[len(BEST_OF_PREFIX):] if self.base.startswith(BEST_OF_PREFIX) else None


class Entry(EntryFile):
    """A validated entry, with its id (the file name without ``.yaml``) and the file it came from."""

    # The config values of the file, validated and converted, in the order the file gives them.
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: Optional[dict[str, list[Any]]] = None
    variants: Optional[list[Variant]] = None
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


def default_order(entry_id: str, item: str) -> str:
    """A sort key from the file name's problem number and the item, numbers zero-padded ("001/001.001b")."""
    match = re.match(r"^problem(\d+)", entry_id)
    problem = int(match.group(1)) if match else 999
    padded = re.sub(r"\d+", lambda m: f"{int(m.group()):03d}", item)
    return f"{problem:03d}/{padded}"


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


_ENTRY_KEYS = {
    "": tuple(EntryFile.model_fields),
    "variants": tuple(VariantSpec.model_fields),
    "rank_by": tuple(RankBy.model_fields),
    "report": tuple(ReportSpec.model_fields),
}
_GRID_MEMBERS = ("scaled", "value")


def _config_key_at(loc: tuple[Any, ...]) -> int:
    """Where in ``loc`` a config key sits when the error is about a config key or value (-1 otherwise):
    ``overrides.<key>``, ``variants[i].overrides.<key>``, ``grid.<key>`` (unknown key) or ``grid.<key>[i]``."""
    if loc[:1] == ("overrides",) and len(loc) >= 2:
        return 1
    if loc[:1] == ("variants",) and loc[2:3] == ("overrides",) and len(loc) >= 4:
        return 3
    if loc[:1] == ("grid",) and len(loc) >= 2:
        return 1
    return -1


def _unknown_entry_key(loc: tuple[Any, ...]) -> str:
    key = str(loc[-1])
    if _config_key_at(loc) == len(loc) - 1:
        return unknown_key_message(key)
    parent = next((str(p) for p in loc[:-1] if isinstance(p, str)), "")
    valid = tuple(Scaled.model_fields) if parent == "grid" else _ENTRY_KEYS.get(parent, _ENTRY_KEYS[""])
    return f"unknown key {key!r}; expected one of {', '.join(valid)}{did_you_mean(key, valid)}"


def _value_at(data: Any, loc: tuple[Any, ...], fallback: Any) -> Any:
    """The value the file gave at ``loc`` (a config value as written, not the part pydantic stopped at)."""
    try:
        for part in loc:
            data = data[part]
    except (KeyError, IndexError, TypeError):
        return fallback
    return data


def _error_text(error: dict, loc: tuple[Any, ...], data: Any) -> tuple[str, str]:
    """(dotted key, problem) of one pydantic error of an entry document."""
    at = _config_key_at(loc)
    value_end = at + 2 if loc[:1] == ("grid",) else at + 1  # a grid value is one item of the key's list
    if error["type"] == "extra_forbidden":
        return _dotted(loc), _unknown_entry_key(loc)
    if at >= 0 and len(loc) >= value_end and error.get("tag", "value") == "value":
        key = str(loc[at])
        sub_error = {**error, "loc": (key, *loc[value_end:])}
        value = _value_at(data, loc[:value_end], error.get("input"))
        return _dotted(loc[:value_end]), value_problem(key, value, sub_error)
    if error["type"] == "missing":
        return _dotted(loc), "required key is missing"
    text = f"got {error.get('input')!r}: {error['msg']}"
    field = EntryFile.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if field is not None and field.description:
        text += f" ({field.description})"
    return _dotted(loc), text


def _pydantic_errors(file: Path, exc: ValidationError, data: Any) -> EntryError:
    found = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        # A grid value's errors name the union member it was read as; the user only sees key and index.
        if loc[:1] == ("grid",) and len(loc) > 3 and loc[3] in _GRID_MEMBERS:
            error = {**error, "tag": loc[3]}
            loc = loc[:3] + loc[4:]
        found.append(_error_text(error, loc, data))
    first_key = found[0][0]
    if len(found) == 1:
        return EntryError(file, first_key, found[0][1])
    return EntryError(file, first_key, "\n  " + "\n  ".join(f"{key or '(entry)'}: {text}" for key, text in found))


def _given(values: BaseModel, raw: dict[str, Any]) -> dict[str, Any]:
    """The values a file set, in the file's order (a model dumps in schema order)."""
    return {str(key): getattr(values, str(key)) for key in raw}


# ---------------------------------------------------------------------------------------------- loading


def parse_entry(data: Any, path: str | Path) -> Entry:
    """Validate the parsed YAML of one entry file; config values are converted through their Config types.

    Each config value is checked on its own here; the combination (cross-key rules of the Config) is
    checked when the entry is planned on its base.
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise EntryError(path, "", f"expected a mapping of entry keys, got {type(data).__name__}")
    entry_id = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.stem
    if not re.match(ENTRY_ID_PATTERN, entry_id):
        raise EntryError(path, "", f"file name gives entry id {entry_id!r}; expected letters, digits, '_', '-' and dots")
    try:
        spec = EntryFile.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_errors(path, exc, data) from None

    overrides = _given(spec.overrides, data.get("overrides") or {})
    grid = None
    if spec.grid is not None:
        grid = _given(spec.grid, data["grid"])
        for key, values in grid.items():
            for index, value in enumerate(values):
                annotation = Config.model_fields[key].annotation
                if isinstance(value, Scaled) and annotation not in (int, float):
                    raise EntryError(path, f"grid.{key}[{index}]", f"'times' needs a numeric config key; {key!r} is {annotation}")
    variants = None
    if spec.variants is not None:
        variants = [
            Variant(name=variant.name, overrides=_given(variant.overrides, raw.get("overrides") or {}))
            for variant, raw in zip(spec.variants, data["variants"])
        ]
    fields = {**spec.model_dump(exclude={"overrides", "grid", "variants"}), "rank_by": spec.rank_by, "report": spec.report}
    return Entry(**fields, overrides=overrides, grid=grid, variants=variants, id=entry_id, path=path)


def load_entry(path: str | Path) -> Entry:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise EntryError(path, "", "file does not exist") from None
    except yaml.YAMLError as exc:
        raise EntryError(path, "", f"not valid YAML: {exc}") from None
    return parse_entry(data, path)


def entry_path(ablations_dir: str | Path, entry_id: str) -> Path:
    return Path(ablations_dir) / f"{entry_id}.yaml"


def load_entries(ablations_dir: str | Path) -> dict[str, Entry]:
    """Every entry of a folder, validated (bases included: known profile or entry, no cycle), in sort order."""
    ablations_dir = Path(ablations_dir)
    if not ablations_dir.is_dir():
        raise EntryError(ablations_dir, "", "ablations folder does not exist")
    entries = {}
    for path in sorted(ablations_dir.glob("*.yaml")):
        entry = load_entry(path)
        entries[entry.id] = entry
    for entry in entries.values():
        check_base(entry, entries)
    return dict(sorted(entries.items(), key=lambda item: item[1].sort_key))


def check_base(entry: Entry, entries: dict[str, Entry]) -> None:
    """The base names an existing profile or entry, and following 'best of' never comes back to an entry."""
    if entry.best_of is None:
        profile_path(entry.ablations_dir, entry.base, file=entry.path, key="base")
        return
    chain = [entry.id]
    current = entry
    while current.best_of is not None:
        target = current.best_of
        if target not in entries:
            hint = did_you_mean(target, entries)
            raise EntryError(current.path, "base", f"unknown entry {target!r} (no {target}.yaml next to it){hint}")
        if target in chain:
            cycle = " -> ".join(chain + [target])
            raise EntryError(current.path, "base", f"'best of' bases form a cycle: {cycle}")
        chain.append(target)
        current = entries[target]
    profile_path(current.ablations_dir, current.base, file=current.path, key="base")


def root_profile(entry: Entry, entries: dict[str, Entry] | None = None) -> str:
    """The profile an entry runs under by default: its base, or that of the entry at the end of its 'best of' chain."""
    seen = {entry.id}
    while entry.best_of is not None:
        target = entry.best_of
        nxt = entries.get(target) if entries else None
        nxt = nxt or load_entry(entry_path(entry.ablations_dir, target))
        if nxt.id in seen:
            raise EntryError(nxt.path, "base", f"'best of' bases form a cycle through {nxt.id!r}")
        seen.add(nxt.id)
        entry = nxt
    return entry.base


# ---------------------------------------------------------------------------------------------- profiles


def profiles_dir(ablations_dir: str | Path) -> Path:
    return Path(ablations_dir) / "profiles"


def available_profiles(ablations_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in profiles_dir(ablations_dir).glob("*.yaml"))


def profile_path(ablations_dir: str | Path, name: str, file: str | Path | None = None, key: str = "profile") -> Path:
    path = profiles_dir(ablations_dir) / f"{name}.yaml"
    if not path.exists():
        known = available_profiles(ablations_dir)
        raise EntryError(
            file or path, key,
            f"unknown profile {name!r}: expected one of {', '.join(known) or '(none)'}{did_you_mean(name, known)}"
        )
    return path


def load_profile(ablations_dir: str | Path, name: str) -> dict[str, Any]:
    """A profile's config keys, validated and converted through the Config schema."""
    path = profile_path(ablations_dir, name)
    try:
        raw = load_yaml(path)
    except ConfigError as exc:
        raise EntryError(path, "", str(exc)) from None
    return validate_config_values(raw, path)


def validate_config_values(values: dict[str, Any], file: str | Path, dotted: str = "") -> dict[str, Any]:
    """Config keys and values checked one by one and converted (``"1e-4"`` -> 0.0001), in the given order."""
    try:
        model = ConfigOverrides.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0])
        where = f"{dotted}.{key}" if dotted else key
        if error["type"] == "extra_forbidden":
            raise EntryError(file, where, unknown_key_message(key)) from None
        raise EntryError(file, where, value_problem(key, values[key], error)) from None
    return _given(model, values)


# ---------------------------------------------------------------------------------------------- JSON Schema


def entry_json_schema() -> dict[str, Any]:
    """JSON Schema of the entry format, for editors (config keys and their types included)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **EntryFile.model_json_schema()}


def entry_json_schema_text() -> str:
    return json.dumps(entry_json_schema(), indent=2, sort_keys=False) + "\n"


def select_entries(entries: dict[str, "Entry"], ids: list[str]) -> list["Entry"]:
    """The entries named by ``ids`` (an id or its ``.yaml`` file), in the order given; an unknown id is a
    ValueError with the closest valid ids."""
    selected = []
    for entry_id in ids:
        if entry_id.endswith(".yaml"):
            entry_id = Path(entry_id).name[: -len(".yaml")]
        if entry_id not in entries:
            raise ValueError(f"unknown entry {entry_id!r}{did_you_mean(entry_id, entries)}")
        selected.append(entries[entry_id])
    return selected
