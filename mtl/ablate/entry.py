"""Reading ablation entries and profiles: an entry file becomes a validated :class:`Entry` or an
:class:`EntryError` naming the file, the dotted key and what was expected; bases are checked (a known
profile or entry, no 'best of' cycle). The format itself lives in :mod:`mtl.ablate.entry_format`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import yaml
from pydantic import BaseModel, ValidationError

from mtl.config import (
    Config,
    ConfigError,
    did_you_mean,
    load_yaml,
    quoted,
    read_yaml_file,
    unknown_key_message,
    value_problem,
)
from mtl.partial_config import ConfigOverrides
from mtl.run.layout import dataset_root_override

from .entry_format import (
    ENTRY_ID_RULE,
    FIGURE_KINDS,
    MAX_ENTRY_ID_LENGTH,
    PROFILE_NAME_PATTERN,
    Entry,
    EntryError,
    EntryFile,
    RankBy,
    ReportSpec,
    Scaled,
    Variant,
    VariantSpec,
    entry_json_schema,
    entry_json_schema_text,
    is_entry_id,
)
from .race import RaceSettings

# The format's names other modules use, with the functions that read entries.
__all__ = [
    "FIGURE_KINDS",
    "Entry",
    "EntryError",
    "EntryFile",
    "ReportSpec",
    "Scaled",
    "base_chain",
    "check_base",
    "check_baselines",
    "entry_json_schema",
    "entry_json_schema_text",
    "entry_path",
    "load_entries",
    "load_entry",
    "load_profile",
    "parse_entry",
    "profile_path",
    "root_profile",
    "select_entries",
    "validate_config_values",
]


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
    return f"unknown key {quoted(key)}; expected one of {', '.join(valid)}{did_you_mean(key, valid)}"


def _value_at(data: Any, loc: tuple[Any, ...], fallback: Any) -> Any:
    """The value the file gave at ``loc`` (a config value as written, not the part pydantic stopped at)."""
    try:
        for part in loc:
            data = data[part]
    except (KeyError, IndexError, TypeError):
        return fallback
    return data


def _error_text(error: Mapping[str, Any], loc: tuple[Any, ...], data: Any) -> tuple[str, str]:
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
    text = f"got {quoted(error.get('input'))}: {error['msg']}"
    field = EntryFile.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    if field is not None and field.description:
        text += f" ({field.description})"
    return _dotted(loc), text


def _pydantic_errors(file: Path, exc: ValidationError, data: Any) -> EntryError:
    found = []
    error: Mapping[str, Any]  # pydantic's ErrorDetails, or a copy of one with a "tag" added
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
    if not is_entry_id(entry_id):
        raise EntryError(path, "", f"file name gives entry id {quoted(entry_id)}; expected {ENTRY_ID_RULE}")
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
                    raise EntryError(path, f"grid.{key}[{index}]",
                                     f"'times' needs a numeric config key; {key!r} is {annotation}")
    variants = None
    if spec.variants is not None:
        variants = [
            Variant(name=variant.name, overrides=_given(variant.overrides, raw.get("overrides") or {}))
            for variant, raw in zip(spec.variants, data["variants"])
        ]
    fields = {
        **spec.model_dump(exclude={"overrides", "grid", "variants"}),
        "rank_by": spec.rank_by,
        "racing": spec.racing,
        "report": spec.report,
    }
    return Entry(**fields, overrides=overrides, grid=grid, variants=variants, id=entry_id, path=path)


def load_entry(path: str | Path) -> Entry:
    path = Path(path)
    try:
        data = read_yaml_file(path)
    except FileNotFoundError:
        raise EntryError(path, "", "file does not exist") from None
    except yaml.YAMLError as exc:
        raise EntryError(path, "", f"not valid YAML: {exc}") from None
    except (OSError, ValueError) as exc:  # a folder, a file that is not UTF-8 text or too large
        raise EntryError(path, "", f"cannot be read as a YAML text file: {exc}") from None
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
        check_baselines(entry, entries)
    return dict(sorted(entries.items(), key=lambda item: item[1].sort_key))


def check_baselines(entry: Entry, entries: dict[str, Entry]) -> None:
    """The entry named for single-task baselines exists."""
    target = entry.single_task_baselines
    if target is not None and target not in entries:
        raise EntryError(entry.path, "single_task_baselines",
                         f"unknown entry {quoted(target)} (no {target}.yaml next to it){did_you_mean(target, entries)}")


def check_base(entry: Entry, entries: dict[str, Entry]) -> None:
    """The base names an existing profile or entry, and following bases never comes back to an entry."""
    if entry.base_entry is None:
        profile_path(entry.ablations_dir, entry.base, file=entry.path, key="base")
        return
    chain = [entry.id]
    current = entry
    while current.base_entry is not None:
        target = current.base_entry
        if target not in entries:
            hint = did_you_mean(target, entries)
            raise EntryError(current.path, "base",
                             f"unknown entry {quoted(target)} (no {target}.yaml next to it){hint}")
        if target in chain:
            cycle = " -> ".join(chain + [target])
            raise EntryError(current.path, "base", f"'best of' bases form a cycle: {cycle}")
        if current.variant_of is not None:
            variant = current.variant_of[1]
            names = entries[target].variant_names()
            if names is not None and variant not in names:
                raise EntryError(current.path, "base", f"entry {target} has no variant {quoted(variant)}; its "
                                 f"variants: {', '.join(names)}{did_you_mean(variant, names)}")
        chain.append(target)
        current = entries[target]
    profile_path(current.ablations_dir, current.base, file=current.path, key="base")


def base_chain(entry: Entry, entries: dict[str, Entry] | None = None) -> Iterator[Entry]:
    """``entry``, then the entry it builds on, and so on to the one based on a profile (from ``entries`` when
    given, else read from the entry's folder); an EntryError when the bases come back to an entry."""
    seen = {entry.id}
    yield entry
    while entry.base_entry is not None:
        target = entry.base_entry
        nxt = entries.get(target) if entries else None
        nxt = nxt or load_entry(entry_path(entry.ablations_dir, target))
        if nxt.id in seen:
            raise EntryError(nxt.path, "base", f"'best of' bases form a cycle through {nxt.id!r}")
        seen.add(nxt.id)
        yield nxt
        entry = nxt


def root_profile(entry: Entry, entries: dict[str, Entry] | None = None) -> str:
    """The profile an entry runs under by default: its base, or that of the entry at the end of its 'best of' chain."""
    *_, root = base_chain(entry, entries)
    return root.base


# ---------------------------------------------------------------------------------------------- profiles


def profiles_dir(ablations_dir: str | Path) -> Path:
    return Path(ablations_dir) / "profiles"


def available_profiles(ablations_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in profiles_dir(ablations_dir).glob("*.yaml"))


def profile_path(ablations_dir: str | Path, name: str, file: str | Path | None = None, key: str = "profile") -> Path:
    # A name like ../x would reach a file outside the folder; a very long one is no file name at all.
    if not re.match(PROFILE_NAME_PATTERN, name) or len(name) > MAX_ENTRY_ID_LENGTH:
        folder = profiles_dir(ablations_dir)
        raise EntryError(file or folder, key,
                         f"profile name {quoted(name)} is not a name: expected letters, digits, '_' and '-', at "
                         f"most {MAX_ENTRY_ID_LENGTH} characters (the file <name>.yaml in {folder})")
    path = profiles_dir(ablations_dir) / f"{name}.yaml"
    if not path.exists():
        known = available_profiles(ablations_dir)
        raise EntryError(
            file or path, key,
            f"unknown profile {quoted(name)}: expected one of {', '.join(known) or '(none)'}{did_you_mean(name, known)}"
        )
    return path


# A profile's section of SLURM options (mtl.ablate.slurm reads it): not config keys, no part of a run's identity.
PROFILE_SLURM_SECTION = "slurm"


# A profile's racing settings (mtl.ablate.race.RaceSettings): how its entries race when they do.
PROFILE_RACING_SECTION = "racing"


def load_profile(ablations_dir: str | Path, name: str) -> dict[str, Any]:
    """A profile's config keys, validated and converted through the Config schema (its ``slurm:`` and
    ``racing:`` sections aside); a profile that trains on MiniScapes takes its folder from $MTL_DATASET_ROOT
    when that is set."""
    path = profile_path(ablations_dir, name)
    try:
        raw = load_yaml(path, extra_keys=(PROFILE_SLURM_SECTION, PROFILE_RACING_SECTION))
    except ConfigError as exc:
        raise EntryError(path, "", str(exc)) from None
    raw.pop(PROFILE_SLURM_SECTION, None)
    raw.pop(PROFILE_RACING_SECTION, None)
    values = validate_config_values(raw, path)
    override = dataset_root_override()
    if override and values.get("dataset") == "miniscapes":  # where MiniScapes lives here; not part of a run's hash
        values["dataset_root"] = override
    return values


def load_profile_racing(ablations_dir: str | Path, name: str) -> Optional[RaceSettings]:
    """A profile's ``racing:`` section, validated; None when it has none."""
    path = profile_path(ablations_dir, name)
    try:
        raw = load_yaml(path, extra_keys=(PROFILE_SLURM_SECTION, PROFILE_RACING_SECTION))
    except ConfigError as exc:
        raise EntryError(path, "", str(exc)) from None
    if PROFILE_RACING_SECTION not in raw:
        return None
    try:
        return RaceSettings.model_validate(raw[PROFILE_RACING_SECTION] or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in (PROFILE_RACING_SECTION, *error["loc"]))
        raise EntryError(path, where, error["msg"]) from None


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


def select_entries(entries: dict[str, Entry], ids: list[str]) -> list[Entry]:
    """The entries named by ``ids`` (an id or its ``.yaml`` file), in the order given; an unknown id is a
    ValueError with the closest valid ids."""
    selected = []
    for entry_id in ids:
        if entry_id.endswith(".yaml"):
            entry_id = Path(entry_id).name[: -len(".yaml")]
        if entry_id not in entries:
            raise ValueError(f"unknown entry {quoted(entry_id)}{did_you_mean(entry_id[:100], entries)}")
        selected.append(entries[entry_id])
    return selected
