"""The typed options of each ``mtl-ablate`` subcommand.

argparse parses the command line; its namespace is turned into one of these frozen dataclasses once, at
dispatch (:meth:`Options.from_namespace`), and the subcommand and everything below it read attributes the type
checker knows. A subcommand's parser sets ``options=`` to its class beside ``func=``; a test checks that every
flag a parser defines is a field of its class, so no flag is dropped on the way.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, TypeVar

from mtl.run.layout import default_ablations_dir, default_runs_dir

OptionsT = TypeVar("OptionsT", bound="Options")

# Namespace attributes argparse itself sets, not flags of a subcommand.
DISPATCH_ATTRIBUTES = frozenset({"func", "options", "command"})


@dataclass(frozen=True, kw_only=True)
class Options:
    """The base of every subcommand's options."""

    @classmethod
    def from_namespace(cls: type[OptionsT], namespace: argparse.Namespace) -> OptionsT:
        """The fields of ``cls`` from the namespace's attributes of the same names (absent ones keep their
        defaults)."""
        values = vars(namespace)
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(frozen=True, kw_only=True)
class Folders(Options):
    """Where the entries and the runs are (``--ablations-dir``, ``--runs-dir``)."""

    ablations_dir: Path = field(default_factory=default_ablations_dir)
    runs_dir: Path = field(default_factory=default_runs_dir)


@dataclass(frozen=True, kw_only=True)
class PlanOptions(Folders):
    """What decides an entry's plan: the profile, and for ``run`` whether runs are forced, retried and raced
    (the read-only subcommands keep the defaults: they plan as ``run`` would without flags)."""

    profile: Optional[str] = None
    force: bool = False
    retry_failed: bool = False
    race: Optional[bool] = None  # None: as the entry or profile says
    race_setting: Optional[list[str]] = None  # KEY=VALUE


@dataclass(frozen=True, kw_only=True)
class ListOptions(Folders):
    full: bool = False


@dataclass(frozen=True, kw_only=True)
class ShowOptions(PlanOptions):
    ids: list[str] = field(default_factory=list)
    estimate: bool = False


@dataclass(frozen=True, kw_only=True)
class StatusOptions(PlanOptions):
    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class RepairOptions(PlanOptions):
    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class RunOptions(PlanOptions):
    ids: list[str] = field(default_factory=list)
    # An ad-hoc entry (run --grid/--set ... --name NAME).
    grid: list[str] = field(default_factory=list)
    set: list[str] = field(default_factory=list)
    base: Optional[str] = None
    name: Optional[str] = None
    seeds: str = "0"
    save: bool = False
    # Where and how the runs train.
    devices: Optional[str] = None
    jobs_per_device: int = 1
    fresh_interpreters: bool = False
    dry_run: bool = False
    dataset_root: Optional[Path] = None
    budget: Optional[int] = None
    with_deps: bool = False
    no_deps: bool = False
    backend: str = "local"
    slurm_profile: Optional[str] = None
    # The --slurm-* flags given, by SlurmOptions field name (partition, timeout_min, ...); None: not given.
    slurm: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> RunOptions:
        values = vars(namespace)
        named = {f.name: values[f.name] for f in fields(cls) if f.name in values and f.name != "slurm"}
        flags = {key.removeprefix("slurm_"): value for key, value in values.items()
                 if key.startswith("slurm_") and key != "slurm_profile"}
        return cls(**named, slurm=flags)


@dataclass(frozen=True, kw_only=True)
class SweepOptions(PlanOptions):
    id: str
    out: Optional[Path] = None
    create: bool = False
    project: Optional[str] = None
    entity: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class DiffOptions(Folders):
    run_a: str
    run_b: str


@dataclass(frozen=True, kw_only=True)
class SchemaOptions(Options):
    pass


def flags_without_fields(parser: argparse.ArgumentParser, options: type[Options]) -> list[str]:
    """The destinations of ``parser``'s flags that ``options`` has no field for (those it would drop)."""
    names = {f.name for f in fields(options)}
    dests = {action.dest for action in parser._actions if action.dest != argparse.SUPPRESS and action.dest != "help"}
    if options is RunOptions:
        dests = {d for d in dests if not d.startswith("slurm_") or d == "slurm_profile"}
    return sorted(dests - names - DISPATCH_ATTRIBUTES)
