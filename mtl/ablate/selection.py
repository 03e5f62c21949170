"""The runs every reader of an entry sees: those of its current plan (entry + profile + resolved base).

``run``, ``status``, ``show``, ``list``, ``report``, ``export`` and ``best of`` all go through the plan, with
the profile of the entry's last ``run`` when none is given. Directories in the entry's folder that the plan
does not use (another profile, an older config) are stale: listed apart, never averaged in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mtl.run.layout import parse_run_name

from .compute import Spent, full_grid_steps, spent
from .decision import Decision
from .entry import Entry, base_chain
from .planner import Plan, entry_decision, make_plan, plan_profile
from .race import RaceSettings


@dataclass
class SelectedRun:
    run_dir: Path
    variant: str
    seed: int
    reused_from: Optional[str] = None  # "<entry>/<run name>" when another entry's run serves this one


@dataclass
class Selection:
    entry_id: str
    profile: str
    runs: list[SelectedRun]
    stale: list[Path] = field(default_factory=list)
    unresolved: Optional[str] = None
    # What stands in for a prescribed base variant that could not run here, and the variants a 'best of' base
    # was chosen without (failed, skipped here).
    base_note: Optional[str] = None
    racing: Optional[RaceSettings] = None
    # A raced entry's race decision (None while it is not over, and for an entry trained as a grid, whose
    # tables decide from its finished runs).
    race_decision: Optional[Decision] = None
    spent: Optional[Spent] = None  # what its runs have trained
    full_grid_steps: int = 0  # what every planned run trained in full would cost

    @property
    def stale_note(self) -> str:
        return stale_note(self.stale)


def select_runs(entry: Entry, runs_dir: str | Path, profile: Optional[str] = None) -> Selection:
    """The selection of ``entry``'s runs under ``profile`` (default: the profile of its last run)."""
    plan = make_plan(entry, plan_profile(entry, profile, runs_dir), runs_dir, allow_unresolved=True)
    runs = [SelectedRun(run.run_dir, run.variant, run.seed, run.reused_from) for run in plan.runs
            if not run.provisional]
    resolved = plan.base.unresolved is None and bool(plan.runs)
    base_note = "; ".join(note for note in (plan.base.fallback, plan.base.missing_note()) if note) or None
    return Selection(entry.id, plan.base.profile, runs, stale_runs(plan, runs_dir), plan.base.unresolved,
                     base_note, racing=plan.racing,
                     race_decision=entry_decision(plan) if plan.racing is not None and resolved else None,
                     spent=spent(plan) if resolved else None, full_grid_steps=full_grid_steps(plan) if resolved else 0)


def stale_runs(plan: Plan, runs_dir: str | Path) -> list[Path]:
    """Run directories in the entry's folder that its current plan does not use: another profile, or an
    older config (the entry edited, its base's winner changed). Readers list them apart, never mix them in."""
    folder = Path(runs_dir).absolute() / plan.entry.id
    if not folder.is_dir():
        return []
    planned = {run.run_dir for run in plan.runs}
    return [child for child in sorted(folder.iterdir())
            if child.is_dir() and parse_run_name(child.name) is not None and child not in planned]


def stale_note(stale: list[Path]) -> str:
    """"3 runs of another profile or an older config not shown", or "" when there are none."""
    if not stale:
        return ""
    return (f"{len(stale)} run{'s' if len(stale) != 1 else ''} of another profile or an older config not shown "
            f"({', '.join(p.name for p in stale[:5])}{', ...' if len(stale) > 5 else ''})")


def with_prerequisites(selected: list[Entry], entries: dict[str, Entry]) -> list[Entry]:
    """The selected entries preceded by the entries their bases (winner or prescribed variant) depend on, each
    once, in order."""
    ordered: list[Entry] = []
    for entry in selected:
        for item in reversed(list(base_chain(entry, entries))):
            if item not in ordered:
                ordered.append(item)
    return ordered
