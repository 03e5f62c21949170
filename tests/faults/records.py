"""Faults in a finished run's records (files deleted or damaged), kills between the two checkpoint
writes, and suites racing on one entry: what must hold is that nothing finished is trained again or
lost, what is rebuilt is byte-identical, and what cannot be is refused naming the file."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch

from faults.launcher import run_train
from faults.runs import fault_args
from mtl.run import layout as rundir
from mtl.run.errors import RecordError
from mtl.run.model import ExitCode, RunState
from mtl.run.records import read_record, read_status, recorded_state

REPO = Path(__file__).resolve().parents[2]


def _kill_after(name: str) -> None:
    import mtl.run.io

    real = mtl.run.io.atomic_torch_save

    def save(obj, path):
        real(obj, path)
        if Path(path).name == name:
            os._exit(9)

    mtl.run.io.atomic_torch_save = save


def kill_after_write(name: str) -> Callable[[], None]:
    """A launcher setup: the trainer dies (exit 9, no handler runs) right after writing checkpoint ``name``."""
    return functools.partial(_kill_after, name)


def _copy(reference: Path, run_dir: Path) -> rundir.RunDirectory:
    shutil.copytree(reference, run_dir, ignore=shutil.ignore_patterns(rundir.LOCK_FILE))
    return rundir.RunDirectory(run_dir)


def _delete(*names: str) -> Callable[[rundir.RunDirectory], None]:
    def damage(run: rundir.RunDirectory) -> None:
        for name in names:
            getattr(run, name).unlink(missing_ok=True)  # a finished run drops last.pt itself
    return damage


def _write(name: str, text: str, *also: str) -> Callable[[rundir.RunDirectory], None]:
    def damage(run: rundir.RunDirectory) -> None:
        getattr(run, name).write_text(text)
        for other in also:
            getattr(run, other).unlink(missing_ok=True)
    return damage


# label, damage, rebuilt (exit 0, byte-identical trace and best.pt) or refused (exit 2) naming this file
DAMAGES = [
    ("last.pt deleted, status.json emptied", _write("status_path", "", "last"), None),
    ("last.pt deleted, status.json not JSON", _write("status_path", '{"state": "fini', "last"), None),
    ("status.json deleted", _delete("status_path"), None),
    ("submission.zip and last.pt deleted", _delete("submission", "last"), None),
    ("status.json and submission.zip deleted", _delete("status_path", "submission"), None),
    ("submission.zip deleted", _delete("submission"), None),
    ("best.pt and submission.zip deleted", _delete("best", "submission"), rundir.BEST_CHECKPOINT),
    ("best.pt truncated, submission.zip deleted", lambda run: (run.best.write_bytes(run.best.read_bytes()[:1000]),
                                                               run.submission.unlink()), rundir.BEST_CHECKPOINT),
    ("metrics.jsonl line 2 cut, submission.zip deleted",
     lambda run: (run.metrics.write_text("".join(line[:20] + "\n" if n == 1 else line for n, line in
                                                 enumerate(run.metrics.read_text().splitlines(True)))),
                  run.submission.unlink()), rundir.METRICS_FILE),
]


def damaged_records(reference: Path, base: Path) -> tuple[int, int, list[str]]:
    """Each damage on a copy of a finished run, then mtl-train on it: (rebuilt, refused naming the file,
    problems)."""
    rebuilt = refused = 0
    problems: list[str] = []
    original = json.loads((reference / rundir.STATUS_FILE).read_text())
    for index, (label, damage, refused_file) in enumerate(DAMAGES):
        run = _copy(reference, base / f"records-{index}")
        trace, best = run.metrics.read_bytes(), run.best.read_bytes() if run.best.exists() else None
        damage(run)
        trace_after_damage = run.metrics.read_bytes()
        code, _ = run_train([*fault_args(), f"--log_dir={run.path}"], base / f"records-{index}.log")
        log = (base / f"records-{index}.log").read_text()
        if refused_file is not None:
            if code != ExitCode.REFUSED or refused_file not in log:
                problems.append(f"{label}: exit {code}, expected 2 naming {refused_file}")
            elif run.metrics.read_bytes() != trace_after_damage:
                problems.append(f"{label}: refused but the trace changed")
            else:
                refused += 1
            continue
        status = read_status(run.path)
        restored = status.model_dump(mode="json") if status else {}
        if code != 0 or run.metrics.read_bytes() != trace or run.best.read_bytes() != best:
            problems.append(f"{label}: exit {code}; trace and best.pt byte-identical: "
                            f"{run.metrics.read_bytes() == trace}, {run.best.read_bytes() == best}")
        elif any(restored.get(key) != original[key] for key in ("state", "step", "best")):
            problems.append(f"{label}: status not restored: {status}")
        elif not run.submission.exists():
            problems.append(f"{label}: no submission.zip after the rebuild")
        else:
            rebuilt += 1
    return rebuilt, refused, problems


def kill_between_checkpoints(base: Path) -> tuple[int, list[str]]:
    """Kill right after last.pt, and right after best.pt, at the end of an epoch; resume; the records must
    agree (best.pt == status.best == a validation point of the trace)."""
    agreed, problems = 0, []
    for name in (rundir.LAST_CHECKPOINT, rundir.BEST_CHECKPOINT):
        run = rundir.RunDirectory(base / f"kill-after-{name}")
        argv = [*fault_args(num_epochs=1), f"--log_dir={run.path}"]
        code, _ = run_train(argv, base / f"kill-after-{name}.log", setup=kill_after_write(name))
        if code != 9:
            problems.append(f"kill after {name}: the trainer exited {code}, not killed")
            continue
        code, _ = run_train(argv, base / f"kill-after-{name}.log")
        try:
            status = read_record(run.path).status  # its best point must be one of the trace's
            best = torch.load(run.best, weights_only=False)["best"]
        except (RecordError, OSError) as exc:
            problems.append(f"kill after {name}: {exc}")
            continue
        recorded = status.best.model_dump() if status and status.best else None
        if code != 0 or recorded != best:
            problems.append(f"kill after {name}: exit {code}, status best {recorded} vs best.pt {best}")
        else:
            agreed += 1
    return agreed, problems


def concurrent_suites(base: Path, profile: dict) -> tuple[str, list[str], int]:
    """Two `mtl-ablate run --force` at once on one entry, then two plain `run` at once: every run ends
    finished, nothing crashes, the records check out."""
    import yaml

    ablations, runs_dir = base / "suite-ablations", base / "suite-runs"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(profile))
    (ablations / "problem1.race.yaml").write_text(yaml.safe_dump({
        "question": "Race?", "item": "1.1", "base": "tiny",
        "variants": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {"optimizer_lr": 0.02}}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mtl.suite", "run", "problem1.race", "--ablations-dir", str(ablations),
               "--runs-dir", str(runs_dir), "--devices", "cpu"]
    problems, codes = [], []
    for extra in (["--force"], []):
        processes = [subprocess.Popen([*command, *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        for process in processes:
            out, _ = process.communicate(timeout=900)
            codes.append(process.returncode)
            if process.returncode != 0:
                problems.append(f"run {' '.join(extra)} racing another: exit {process.returncode}: {out[-500:]}")
    from faults.checks import check_run_dir

    runs = sorted(p for p in (runs_dir / "problem1.race").iterdir() if p.is_dir() and rundir.parse_run_name(p.name))
    files = 0
    for run_dir in runs:
        check = check_run_dir(run_dir)
        problems += check.problems
        files += check.files_checked
        if recorded_state(run_dir) is not RunState.FINISHED:
            problems.append(f"{run_dir.name}: {recorded_state(run_dir)} after the races")
    return f"exits {codes}, {len(runs)} runs finished", problems, files
