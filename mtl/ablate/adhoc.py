"""Ad-hoc entries: a one-off grid from the command line (``mtl-ablate run --grid optimizer_lr=0.001,0.01
--name lr``) that plans, runs and reports like an entry file.

The command line becomes the data of an entry file and goes through the same validation
(``parse_entry``: every value parsed by the Config schema, as in YAML). Its id is ``adhoc.<name>``; the
generated YAML is kept beside its runs (``<runs-dir>/adhoc.<name>/entry.yaml``) so that ``report`` finds
it, or written under the ablations folder when the user asks for it (``--save``). Profiles and ``best of``
bases are looked up in the ablations folder, as for a file entry there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from mtl.config import quoted, read_yaml_file, read_yaml_text
from mtl.run.io import atomic_write_text

from .entry import Entry, EntryError, entry_path, load_entries, parse_entry
from .entry_format import ENTRY_ID_RULE, is_entry_id
from .options import RunOptions

ADHOC_PREFIX = "adhoc."
ENTRY_COPY = "entry.yaml"  # the generated entry, kept in the entry's runs folder


class AdhocError(ValueError):
    """A --grid/--set argument that is not KEY=VALUE[,VALUE...]."""


def _value(text: str, flag: str) -> Any:
    """One value as YAML reads it (``0.01`` a float, ``adam`` a string, ``[1, 2]`` a list)."""
    if not text.strip():
        return text
    try:
        return read_yaml_text(text)
    except yaml.YAMLError as exc:
        raise AdhocError(f"{flag} value {quoted(text)} is not a YAML value: {exc}") from None


def _pair(argument: str, flag: str) -> tuple[str, str]:
    key, sep, values = argument.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise AdhocError(f"{flag} {quoted(argument)}: expected KEY=VALUE{'[,VALUE...]' if flag == '--grid' else ''}")
    return key.strip(), values


def adhoc_entry_data(grid: Sequence[str], sets: Sequence[str], base: str, question: Optional[str] = None,
                     seeds: Sequence[int] = (0,)) -> dict[str, Any]:
    """The entry-file mapping that ``--grid``/``--set``/``--base`` describe."""
    # Item 0: no assignment item; it sorts before them in reports.
    data: dict[str, Any] = {"question": question or "Ad-hoc grid: " + " ".join(grid), "item": "0", "base": base}
    parsed_grid = {}
    for argument in grid:
        key, values = _pair(argument, "--grid")
        parsed_grid[key] = [_value(v, "--grid") for v in values.split(",")]
    overrides = {}
    for argument in sets:
        key, value = _pair(argument, "--set")
        overrides[key] = _value(value, "--set")
    if parsed_grid:
        data["grid"] = parsed_grid
    if overrides:
        data["overrides"] = overrides
    data["seeds"] = list(seeds)
    return data


def entry_copy_path(runs_dir: Path, entry_id: str) -> Path:
    return Path(runs_dir) / entry_id / ENTRY_COPY


def adhoc_id(name: str) -> str:
    """``adhoc.<name>``, the id of the entry ``--name NAME`` names; AdhocError when it is no entry id (it
    names a folder under the runs folder and, with --save, a file in the ablations folder)."""
    entry_id = name if name.startswith(ADHOC_PREFIX) else ADHOC_PREFIX + name
    if not is_entry_id(entry_id):
        raise AdhocError(f"--name {quoted(name)}: expected {ENTRY_ID_RULE} (it names the entry {ADHOC_PREFIX}NAME, "
                         "its folder under the runs folder and, with --save, its file in the ablations folder)")
    return entry_id


def make_adhoc_entry(name: str, data: dict[str, Any], ablations_dir: Path, runs_dir: Path, save: bool,
                     write: bool = True) -> Entry:
    """Validate ``data`` as entry ``adhoc.<name>`` and, with ``write``, write its YAML (beside its runs; with
    ``save`` also into the ablations folder). Nothing is written when it is invalid."""
    entry_id = adhoc_id(name)
    path = entry_path(ablations_dir, entry_id)  # where it would live as a file: profiles are found there
    entry = parse_entry(data, path)
    text = yaml.safe_dump(data, sort_keys=False)
    if save and path.exists() and _text_or_none(path) != text:
        raise EntryError(path, "", "exists with other content; pick another --name or edit the file")
    if not write:
        return entry
    if save:
        atomic_write_text(path, text)
    copy = entry_copy_path(runs_dir, entry_id)
    copy.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(copy, text)
    return entry


def _text_or_none(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def saved_adhoc_entries(ablations_dir: Path, runs_dir: Path, ids: Sequence[str]) -> dict[str, Entry]:
    """Ad-hoc entries named in ``ids`` whose YAML is kept beside their runs (not in the ablations folder).
    An id that is no entry id is not looked up: it would name a file outside the runs folder."""
    found = {}
    for entry_id in ids:
        if not (entry_id.startswith(ADHOC_PREFIX) and is_entry_id(entry_id)):
            continue
        copy = entry_copy_path(runs_dir, entry_id)
        if copy.is_file():
            found[entry_id] = parse_entry(_read_copy(copy), entry_path(ablations_dir, entry_id))
    return found


def _read_copy(copy: Path) -> Any:
    try:
        return read_yaml_file(copy)
    except yaml.YAMLError as exc:
        raise EntryError(copy, "", f"not valid YAML: {exc}") from None
    except (OSError, ValueError) as exc:
        raise EntryError(copy, "", f"cannot be read as a YAML text file: {exc}") from None


def entries_with_adhoc(ablations_dir: Path, runs_dir: Path, ids: Sequence[str] = ()) -> dict[str, Entry]:
    """The ablations folder's entries, and the ad-hoc ones of ``ids`` whose YAML is kept beside their runs."""
    entries = load_entries(ablations_dir)
    return {**saved_adhoc_entries(ablations_dir, runs_dir, [i for i in ids if i not in entries]), **entries}


def adhoc_entry_from_args(args: RunOptions) -> Entry:
    """The entry that ``run --grid/--set/--base/--seeds --name [--save]`` describes: validated like a file
    entry, its YAML written."""
    if args.ids or not args.name:
        raise AdhocError("an ad-hoc grid (--grid/--set) needs --name NAME and no entry IDs")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise AdhocError(f"--seeds {quoted(args.seeds)}: expected comma-separated integers") from None
    data = adhoc_entry_data(args.grid, args.set, args.base or args.profile or "quick", seeds=seeds)
    # A dry run shows the plan and writes nothing, not even the entry's YAML.
    return make_adhoc_entry(args.name, data, args.ablations_dir, args.runs_dir, args.save,
                            write=not args.dry_run)
