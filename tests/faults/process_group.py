"""A stop signal sent to a run's whole process group -- trainer and DataLoader workers alike -- the way
SLURM (``scancel``, preemption, ``--signal=USR2@N`` before the time limit), a container runtime and a
closed terminal send it.

The trainer is ``mtl-train`` forked from the fault launcher's server, as ``mtl-ablate run`` starts it, in
a session of its own (``os.setsid`` before its main), so ``os.killpg`` reaches exactly it and its workers.
The signal goes out once the run has checkpointed a step (with a checkpoint after every step, a new
``last.pt`` means training is under way); the run must end ``interrupted`` with exit 143 and a rerun must
end bit-identical to an unbroken run.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from faults.checks import check_run_dir, run_differences
from faults.launcher import run_train, start_train
from mtl.run.layout import RunDirectory
from mtl.run.model import ExitCode
from mtl.run.records import read_status

WORKERS = 2


@dataclass
class GroupStop:
    signal_name: str
    exit_code: int
    state: str
    error: str
    problems: list[str] = field(default_factory=list)
    files_checked: int = 0


def own_session() -> None:
    """Launcher setup: the training leads a session (and process group) of its own, as a job step does."""
    os.setsid()


def _group_empties(pgid: int, timeout: float = 30) -> bool:
    """Whether every process of the group has ended (within ``timeout``): nothing is left running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _modified_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def stop_group(argv: list[str], run_dir: Path, signum: int, log_path: Path, timeout: float = 600) -> GroupStop:
    """Start (or resume) the run, send ``signum`` to its process group once it has checkpointed a step in
    this start, and check how it ended (exit code, state, the error naming the signal, every file readable)."""
    name = signal.Signals(signum).name
    last = RunDirectory(run_dir).last
    before = _modified_ns(last)  # a resumed run's checkpoint: wait for a newer one
    process = start_train([*argv, f"--log_dir={run_dir}"], log_path, setup=own_session)
    deadline = time.monotonic() + timeout
    while _modified_ns(last) in (None, before) and process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not process.alive() or _modified_ns(last) in (None, before):
        process.send(signal.SIGKILL)
        return GroupStop(name, process.wait(), "", "", [f"{run_dir}: the run ended or hung before it checkpointed "
                                                         f"a step (log {log_path})"])
    os.killpg(process.pid, signum)  # the session leader's pid is its group id
    code = process.wait(timeout)
    status = read_status(run_dir)
    result = GroupStop(name, code, str(status.state) if status else "", (status.error if status else None) or "")
    output = process.output()
    if code != ExitCode.STOPPED or result.state != "interrupted":
        result.problems.append(f"{run_dir}: {name} to the process group ended the run with exit {code}, state "
                               f"{result.state!r}, expected 143 and 'interrupted' (log {log_path})")
    if name not in result.error:
        result.problems.append(f"{run_dir}: the status error does not name {name}: {result.error!r}")
    if not _group_empties(process.pid):
        result.problems.append(f"{run_dir}: a process of the stopped run's group (a loader worker?) is still running")
    if "DataLoader worker" in output:
        result.problems.append(f"{run_dir}: a DataLoader worker died of {name} (log {log_path})")
    check = check_run_dir(run_dir)
    result.problems += check.problems
    result.files_checked = check.files_checked
    return result


def resume_and_compare(argv: list[str], run_dir: Path, reference_dir: Path, log_path: Path) -> list[str]:
    """Rerun the stopped run to its end (forked from the launcher's server: no group signal here); what
    differs from the unbroken reference (nothing, when exact)."""
    code, _ = run_train([*argv, f"--log_dir={run_dir}"], log_path)
    if code != ExitCode.FINISHED:
        return [f"{run_dir}: the rerun exited {code} (log {log_path})"]
    return run_differences(run_dir, reference_dir)
