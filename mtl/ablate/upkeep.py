"""What ``mtl-ablate`` does about other processes and lost files: which runs another live process is
training (``run`` waits for them), and ``repair``, which rebuilds what finished runs lost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from mtl.run.errors import RecordError, RunRefused
from mtl.run.layout import lock_held
from mtl.run.model import RunState
from mtl.run.records import read_status, recorded_state, stall_of

from .planner import Plan, UnresolvedBase

BASE_POLL_S = 5.0  # how often `run` looks again at a base another process is training


def trained_elsewhere(folder: Path) -> list[str]:
    """The run directories below ``folder`` that another live process is training."""
    if not folder.is_dir():
        return []
    return sorted(child.name for child in folder.iterdir()
                  if child.is_dir() and lock_held(child) and recorded_state(child) is RunState.RUNNING)


def plan_when_base_settles(make_plan: Callable[[], Plan], runs_dir: Path, say: Callable[[str], None]) -> Plan:
    """``make_plan()``; while its 'best of' base is unresolved because another process is training the
    base's runs, wait for them (saying so once) rather than fail. UnresolvedBase otherwise."""
    said = False
    stalled: set[str] = set()
    while True:
        try:
            return make_plan()
        except UnresolvedBase as exc:
            busy = trained_elsewhere(runs_dir / exc.entry_id)
            if not busy:
                raise
            if not said:
                say(f"waiting for its base: another process is training {len(busy)} run(s) of {exc.entry_id} "
                    f"({', '.join(busy)})")
                said = True
            _say_stalls(runs_dir / exc.entry_id, busy, stalled, say)
            time.sleep(BASE_POLL_S)


def _say_stalls(folder: Path, busy: list[str], stalled: set[str], say: Callable[[str], None]) -> None:
    """Say once when a base run another process trains stops making progress (and when it goes on)."""
    for name in busy:
        try:
            status = read_status(folder / name)
        except RecordError:
            continue
        stall = stall_of(folder / name, status) if status is not None else None
        if stall and name not in stalled:
            stalled.add(name)
            say(f"the base run {folder.name}/{name} is stalled: {stall}; still waiting for it")
        elif stall is None and name in stalled:
            stalled.discard(name)
            say(f"the base run {folder.name}/{name} is progressing again")


def repair_plan(plan: Plan, say: Callable[[str], None]) -> bool:
    """Rebuild what the plan's finished runs lost (status, submission, best.pt after a kill), each step
    said; False when some run's records cannot be repaired (said, naming the file)."""
    from mtl.train.engine import repair  # (lazy: torch)

    repaired = True
    for run in plan.runs:
        if run.provisional or not run.run_dir.is_dir():
            continue
        label = f"{plan.entry.id} {run.name}"

        def say_run(text: str, label: str = label) -> None:
            say(f"{label}: {text}")

        try:
            status = repair(run.config, say_run)
        except (RunRefused, RecordError, OSError) as exc:
            say(f"{label}: cannot repair: {exc}")
            repaired = False
            continue
        say(f"{label}: {status.state}, records agree")
    return repaired
