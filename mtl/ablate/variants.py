"""An entry's variants: the named list, or the grid's points with relative values resolved against the
base, and how the entry file writes each of them (for error messages that point into the file)."""

from __future__ import annotations

import itertools
import math
from typing import Any

from mtl.config import Config, ConfigError, format_config_value, make_config

from .entry import Entry, EntryError, Scaled
from .entry_format import grid_point_name


def _scaled_value(entry: Entry, key: str, index: int, scaled: Scaled, reference: Config) -> Any:
    base_value = getattr(reference, key)
    value = float(f"{base_value * scaled.times:.12g}")  # 0.01 * 0.1 -> 0.001, not 0.0010000000000000002
    if Config.model_fields[key].annotation is int:
        if not math.isclose(value, round(value)):
            raise EntryError(
                entry.path,
                f"grid.{key}[{index}]",
                f"base value {base_value} times {scaled.times} = {value} is not an integer",
            )
        value = int(round(value))
    return value


def expand_variants(entry: Entry, base_values: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(variant name, overrides) for every variant: grid points (relative values resolved) or the explicit list."""
    if entry.variants is not None:
        return [(v.name, dict(v.overrides)) for v in entry.variants]
    if entry.grid is None:
        return [("base", {})]
    try:
        reference = make_config({**base_values, **entry.overrides})
    except ConfigError as exc:
        raise EntryError(entry.path, "overrides", f"does not combine with the base: {exc}") from None
    axes = []
    for key, values in entry.grid.items():
        axes.append(
            [
                _scaled_value(entry, key, i, v, reference) if isinstance(v, Scaled) else v
                for i, v in enumerate(values)
            ]
        )
    variants = []
    for combo in itertools.product(*axes):
        overrides = dict(zip(entry.grid, combo))
        variants.append((grid_point_name(overrides), overrides))
    return variants


def written_points(entry: Entry) -> list[str]:
    """Each variant as the entry file writes it ("grid point optimizer_lr={times: 1}"), in plan order."""
    if entry.variants is not None:
        return [f"variant {v.name!r}" for v in entry.variants]
    if entry.grid is None:
        return ["the base"]
    axes = [[f"{key}={{times: {v.times:g}}}" if isinstance(v, Scaled) else f"{key}={format_config_value(v, '+')}"
             for v in values] for key, values in entry.grid.items()]
    return ["grid point " + ",".join(combo) for combo in itertools.product(*axes)]


def where_in_entry(entry: Entry, variant: str) -> str:
    """The entry key whose values make a run's config: its grid, its variant's overrides or its overrides."""
    if entry.grid is not None:
        return "grid"
    if entry.variants is not None:
        return f"variants[{[v.name for v in entry.variants].index(variant)}].overrides"
    return "overrides"
