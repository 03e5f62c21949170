"""What ``mtl-ablate`` does about other processes and lost files: which runs another live process is
training (``run`` waits for them), and ``repair``, which rebuilds what finished runs lost."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mtl.records import RecordError
from mtl.rundir import RunRefused, State, lock_held, recorded_state

from .planner import Plan


def trained_elsewhere(folder: Path) -> list[str]:
    """The run directories below ``folder`` that another live process is training."""
    if not folder.is_dir():
        return []
    return sorted(child.name for child in folder.iterdir()
                  if child.is_dir() and lock_held(child) and recorded_state(child) == State.RUNNING)


def repair_plan(plan: Plan, say: Callable[[str], None]) -> bool:
    """Rebuild what the plan's finished runs lost (status, submission, best.pt after a kill), each step
    said; False when some run's records cannot be repaired (said, naming the file)."""
    from mtl.engine import repair  # (lazy: torch)

    repaired = True
    for run in plan.runs:
        if run.provisional or not run.run_dir.is_dir():
            continue
        label = f"{plan.entry.id} {run.name}"
        try:
            status = repair(run.config, lambda text, label=label: say(f"{label}: {text}"))
        except (RunRefused, RecordError, OSError) as exc:
            say(f"{label}: cannot repair: {exc}")
            repaired = False
            continue
        say(f"{label}: {status.get('state')}, records agree")
    return repaired
