"""The ablation entry format: one YAML file per assignment question under ``ablations/``.

An entry names the question it answers, a base (a profile, or the winning config of an earlier entry),
fixed overrides, a grid or an explicit list of variants, seeds, how runs are ranked and what the report
shows. Every config value goes through :class:`mtl.config.Config`, so ``1e-4`` (a string to YAML)
becomes a float and a bad value fails before anything runs, naming the file, the dotted key and what
was expected.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtl.config import Config, ConfigError, load_yaml, make_config, unknown_key_message

ENTRY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"
BEST_OF_PREFIX = "best of "
PROFILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
# Variant names become directory names and W&B job types.
VARIANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$"
FIGURE_KINDS = ("curves", "bars", "qualitative", "depth_histogram")
DEFAULT_RANK_METRIC = "val/grader"


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


class Variant(_Strict):
    name: str = Field(pattern=VARIANT_NAME_PATTERN, max_length=64, description="Variant name (run directory prefix, W&B job type).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config keys set by this variant.")

    @field_validator("name")
    @classmethod
    def _not_null_word(cls, name: str) -> str:
        # The name travels as --wandb_job_type=<name>, where "none"/"null" would mean "no job type".
        if name.lower() in ("none", "null"):
            raise ValueError(f"{name!r} is reserved (it reads as 'no value' on a command line); pick another name")
        return name


class RankBy(_Strict):
    metric: str = Field(DEFAULT_RANK_METRIC, pattern=r"^val/", description="Validation metric a run is ranked by.")
    mode: Literal["max", "min"] = Field("max", description="Whether higher (max) or lower (min) is better.")


class ReportSpec(_Strict):
    columns: list[str] = Field(default_factory=list, description="Config keys shown as table columns.")
    figures: list[Literal["curves", "bars", "qualitative", "depth_histogram"]] = Field(
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
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config keys fixed for every run of this entry.")
    grid: Optional[dict[str, list[Union[Scaled, Any]]]] = Field(
        None, description="Config key -> list of values; the runs are the cartesian product."
    )
    variants: Optional[list[Variant]] = Field(None, min_length=1, description="Explicit list of named variants.")
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
    def _grid_lists(cls, grid: Optional[dict[str, list[Any]]]) -> Optional[dict[str, list[Any]]]:
        if grid is not None:
            if not grid:
                raise ValueError("a grid needs at least one key")
            for key, values in grid.items():
                if not values:
                    raise ValueError(f"grid key {key!r} needs at least one value")
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
    "variants": tuple(Variant.model_fields),
    "rank_by": tuple(RankBy.model_fields),
    "report": tuple(ReportSpec.model_fields),
}


def _unknown_entry_key(loc: tuple[Any, ...]) -> str:
    parent = next((str(p) for p in loc[:-1] if isinstance(p, str)), "")
    if parent == "grid":  # a Scaled value with a stray key
        valid = tuple(Scaled.model_fields)
    else:
        valid = _ENTRY_KEYS.get(parent, _ENTRY_KEYS[""])
    key = str(loc[-1])
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown key {key!r}; expected one of {', '.join(valid)}{hint}"


def _pydantic_errors(file: Path, exc: ValidationError) -> EntryError:
    messages = []
    first_key = ""
    for error in exc.errors():
        loc = tuple(error["loc"])
        # Union[Scaled, Any] reports under the member name (never the first part: that is a top-level key,
        # which may itself be spelled "Scaled"); the user only sees the grid key and index.
        loc = loc[:1] + tuple(p for p in loc[1:] if p not in ("Scaled", "any"))
        key = _dotted(loc)
        first_key = first_key or key
        if error["type"] == "extra_forbidden":
            text = _unknown_entry_key(loc)
        elif error["type"] == "missing":
            text = "required key is missing"
        else:
            text = f"got {error.get('input')!r}: {error['msg']}"
            field = EntryFile.model_fields.get(str(loc[0])) if len(loc) == 1 else None
            if field is not None and field.description:
                text += f" ({field.description})"
        messages.append(f"{key or '(entry)'}: {text}" if len(exc.errors()) > 1 else text)
    if len(messages) == 1:
        return EntryError(file, first_key, messages[0])
    return EntryError(file, first_key, "\n  " + "\n  ".join(messages))


def _config_problem(text: str) -> str:
    """The useful part of a ConfigError message (drop its 'invalid config:' header)."""
    lines = [line.strip() for line in text.splitlines()]
    return "; ".join(lines[1:]) if len(lines) > 1 and lines[0].startswith("invalid config") else text


def _has_field_error(key: str, value: Any) -> bool:
    """Whether ``key: value`` is wrong on its own (not merely in combination with a default of another key)."""
    try:
        Config(**{key: value})
    except ValidationError as exc:
        return any(error["loc"] for error in exc.errors())
    return False


def coerce_config_value(key: str, value: Any, file: str | Path, dotted: str) -> Any:
    """Validate one config value through the Config schema and return it converted (``"1e-4"`` -> 0.0001)."""
    if key not in Config.model_fields:
        raise EntryError(file, dotted, unknown_key_message(key))
    try:
        config = make_config({key: value})
    except ConfigError as exc:
        if _has_field_error(key, value):
            raise EntryError(file, dotted, _config_problem(str(exc))) from None
        return value  # only a cross-key rule failed against a default; checked with the full combination
    return getattr(config, key)


def coerce_config_mapping(values: dict[str, Any], file: str | Path, dotted: str) -> dict[str, Any]:
    """Validate and convert every key of a mapping of config values, then the mapping as a whole."""
    if not isinstance(values, dict):
        raise EntryError(file, dotted, f"expected a mapping of config keys, got {values!r}")
    coerced = {key: coerce_config_value(str(key), value, file, f"{dotted}.{key}") for key, value in values.items()}
    check_combination(coerced, file, dotted)
    return coerced


def check_combination(values: dict[str, Any], file: str | Path, dotted: str) -> Config:
    try:
        return make_config(values)
    except ConfigError as exc:
        raise EntryError(file, dotted, _config_problem(str(exc))) from None


_NUMERIC_TYPES = (int, float)


# ---------------------------------------------------------------------------------------------- loading


def parse_entry(data: Any, path: str | Path) -> Entry:
    """Validate the parsed YAML of one entry file; values are converted through the Config schema."""
    path = Path(path)
    if not isinstance(data, dict):
        raise EntryError(path, "", f"expected a mapping of entry keys, got {type(data).__name__}")
    entry_id = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.stem
    if not re.match(ENTRY_ID_PATTERN, entry_id):
        raise EntryError(path, "", f"file name gives entry id {entry_id!r}; expected letters, digits, '_', '-' and dots")
    try:
        spec = EntryFile.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_errors(path, exc) from None

    overrides = coerce_config_mapping(spec.overrides, path, "overrides")
    grid = None
    if spec.grid is not None:
        grid = {}
        for key, values in spec.grid.items():
            converted = []
            for index, value in enumerate(values):
                dotted = f"grid.{key}[{index}]"
                if isinstance(value, Scaled):
                    field = Config.model_fields.get(key)
                    if field is None:
                        raise EntryError(path, dotted, unknown_key_message(key))
                    if field.annotation not in _NUMERIC_TYPES:
                        raise EntryError(path, dotted, f"'times' needs a numeric config key; {key!r} is {field.annotation}")
                    converted.append(value)
                else:
                    converted.append(coerce_config_value(key, value, path, dotted))
            grid[key] = converted
        _check_grid_combinations(overrides, grid, path)
    variants = None
    if spec.variants is not None:
        variants = []
        for index, variant in enumerate(spec.variants):
            dotted = f"variants[{index}].overrides"
            values = coerce_config_mapping(variant.overrides, path, dotted)
            check_combination({**overrides, **values}, path, dotted)
            variants.append(Variant(name=variant.name, overrides=values))
    for index, column in enumerate(spec.report.columns):
        if column not in Config.model_fields:
            raise EntryError(path, f"report.columns[{index}]", unknown_key_message(column))
    fields = {**spec.model_dump(exclude={"overrides", "grid", "variants"}), "rank_by": spec.rank_by, "report": spec.report}
    return Entry(**fields, overrides=overrides, grid=grid, variants=variants, id=entry_id, path=path)


def _check_grid_combinations(overrides: dict[str, Any], grid: dict[str, list[Any]], path: Path) -> None:
    import itertools

    absolute = {k: [v for v in vs if not isinstance(v, Scaled)] for k, vs in grid.items()}
    keys = [k for k, vs in absolute.items() if vs]
    for combo in itertools.product(*(absolute[k] for k in keys)):
        values = dict(zip(keys, combo))
        check_combination({**overrides, **values}, path, "grid")


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
            close = difflib.get_close_matches(target, list(entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
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
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise EntryError(
            file or path, key, f"unknown profile {name!r}: expected one of {', '.join(known) or '(none)'}{hint}"
        )
    return path


def load_profile(ablations_dir: str | Path, name: str) -> dict[str, Any]:
    """A profile's config keys, validated and converted through the Config schema."""
    path = profile_path(ablations_dir, name)
    try:
        raw = load_yaml(path)
    except ConfigError as exc:
        raise EntryError(path, "", str(exc)) from None
    return coerce_config_mapping(raw, path, "")


# ---------------------------------------------------------------------------------------------- JSON Schema


def entry_json_schema() -> dict[str, Any]:
    """JSON Schema of the entry format, for editors: the entry models, with the config keys spelled out."""
    schema = EntryFile.model_json_schema()
    config_schema = Config.model_json_schema()
    config_properties = config_schema["properties"]
    defs = schema.setdefault("$defs", {})
    for name, definition in config_schema.get("$defs", {}).items():
        defs.setdefault(name, definition)
    overrides_schema = {
        "type": "object",
        "description": "Config keys (see mtl-train --help) and their values.",
        "properties": config_properties,
        "additionalProperties": False,
    }
    schema["properties"]["overrides"] = {**overrides_schema, "description": schema["properties"]["overrides"]["description"]}
    defs["Variant"]["properties"]["overrides"] = {**overrides_schema, "description": defs["Variant"]["properties"]["overrides"]["description"]}
    grid_properties = {
        key: {"type": "array", "minItems": 1, "items": {"anyOf": [{"$ref": "#/$defs/Scaled"}, prop]}}
        for key, prop in config_properties.items()
    }
    schema["properties"]["grid"] = {
        "description": schema["properties"]["grid"]["description"],
        "anyOf": [
            {"type": "object", "properties": grid_properties, "additionalProperties": False, "minProperties": 1},
            {"type": "null"},
        ],
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


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
            close = difflib.get_close_matches(entry_id, list(entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown entry {entry_id!r}{hint}")
        selected.append(entries[entry_id])
    return selected
