"""Preemption: kill ``mtl-train`` at random moments, restart it, and demand that nothing was lost.

One *chain* is one run directory: start the run, send the signal after a random delay, check every file
in the directory, start it again (it resumes), and so on; after the wanted number of kills the run is
left to finish and must match an uninterrupted reference run bit for bit. Each restart resumes from a
later checkpoint, so the kill moments of a chain walk through the whole life of a run: start-up, the
first writes, training steps, checkpoint writes, validation, predictions and submission.zip. A chain that
finishes before it was killed often enough is verified, and the next kill starts a new chain.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from faults.checks import DirCheck, check_run_dir, run_differences
from faults.launcher import STARTED_LINE, start_train

# What a signal may end in: SIGKILL always kills (-9) unless the run finished first; SIGTERM makes the
# run checkpoint and exit 143, or finish (0) when it arrives while predictions are written.
ACCEPTED_EXITS = {signal.SIGKILL: (-signal.SIGKILL, 0), signal.SIGTERM: (143, 0)}


@dataclass
class Kill:
    signal_name: str
    delay_s: float
    exit_code: int
    phase: str  # where the run stood when the signal arrived (from status.json after the kill)
    files_checked: int
    problems: list[str]


@dataclass
class Chain:
    run_dir: Path
    kills: list[Kill] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)  # from the reference, once the run finished
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)  # unreadable files, unexpected exit codes, leftovers


def phase_of(run_dir: Path, num_epochs: int) -> str:
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except FileNotFoundError:
        return "start-up (no status yet)"
    state, epoch = status.get("state"), status.get("epoch", 0)
    if state == "finished":
        return "after finishing"
    if state == "interrupted":
        return f"stopped in epoch {epoch + 1}" if epoch < num_epochs else "stopped while finishing"
    if not (run_dir / "checkpoints" / "last.pt").exists():
        return "start-up (no checkpoint yet)"
    return f"epoch {epoch + 1}" if epoch < num_epochs else "predictions and submission.zip"


def _expect_exit(kill_signal: int, code: int, run_dir: Path, output: str) -> list[str]:
    if kill_signal == signal.SIGTERM and code == -signal.SIGTERM and STARTED_LINE not in output:
        return []  # arrived while the interpreter was still starting, before mtl-train's first line
    if code not in ACCEPTED_EXITS[kill_signal]:
        return [f"{run_dir}: {signal.Signals(kill_signal).name} ended mtl-train with exit code {code}, expected one "
                f"of {ACCEPTED_EXITS[kill_signal]}"]
    if kill_signal == signal.SIGTERM and code == 143 and "before the run started; nothing was written" not in output:
        status = json.loads((run_dir / "status.json").read_text())
        if status.get("state") != "interrupted" or not (run_dir / "checkpoints" / "last.pt").exists():
            return [f"{run_dir}: exit 143 but state {status.get('state')!r} and "
                    f"last.pt {'present' if (run_dir / 'checkpoints' / 'last.pt').exists() else 'missing'}"]
    return []


def run_chain(argv: list[str], run_dir: Path, reference_dir: Path, kill_signal: int, kills_wanted: int,
              rng: random.Random, max_delay_s: float, num_epochs: int, logs: Path,
              on_kill: Optional[Callable[[Kill], None]] = None) -> Chain:
    """Kill the run in ``run_dir`` up to ``kills_wanted`` times, then let it finish and compare it."""
    chain = Chain(run_dir)
    command = [*argv, f"--log_dir={run_dir}"]
    log = logs / f"{run_dir.name}.log"
    while len(chain.kills) < kills_wanted:
        log_offset = len(log.read_text(errors="replace")) if log.exists() else 0
        process = start_train(command, log)
        delay = rng.uniform(0.0, max_delay_s)
        process.process.join(delay)
        if not process.alive():
            code = process.wait()
            if code != 0:
                chain.problems.append(f"{run_dir}: mtl-train exited {code} before the signal; log {log}")
            break  # finished before this kill: verify below
        process.send(kill_signal)
        code = process.wait()
        check = check_run_dir(run_dir)
        output = process.output()[log_offset:]  # this attempt's lines
        kill = Kill(signal.Signals(kill_signal).name, round(delay, 2), code, phase_of(run_dir, num_epochs),
                    check.files_checked, check.problems + _expect_exit(kill_signal, code, run_dir, output))
        chain.kills.append(kill)
        chain.files_checked += check.files_checked
        chain.problems += kill.problems
        if on_kill:
            on_kill(kill)
    process = start_train(command, log)
    code = process.wait()
    if code != 0:
        chain.problems.append(f"{run_dir}: the final uninterrupted start exited {code}; log {log}")
    final: DirCheck = check_run_dir(run_dir)
    chain.files_checked += final.files_checked
    chain.problems += final.problems
    chain.problems += [f"{path}: temporary file left behind after the run finished" for path in final.temporaries]
    chain.differences = run_differences(run_dir, reference_dir)
    return chain


def preempt(argv: list[str], root: Path, reference_dir: Path, kill_signal: int, trials: int, seed: int,
            max_delay_s: float, num_epochs: int, keep: bool = False,
            on_kill: Optional[Callable[[Kill], None]] = None) -> list[Chain]:
    """``trials`` kills spread over as many chains as it takes; every chain ends verified.

    A resumed run has less left to train than the delay is drawn over, so a chain often finishes before
    its later kills: the next chain takes them. Chains are capped at three per kill wanted (a chain that
    ends unkilled counts against the cap), so a run that never lives long enough to be signalled ends
    the loop short of ``trials`` kills, which the callers assert against."""
    rng = random.Random(seed)
    chains: list[Chain] = []
    kills = 0
    while kills < trials and len(chains) < 3 * trials:
        run_dir = root / f"{signal.Signals(kill_signal).name.lower()}-{len(chains)}"
        chain = run_chain(argv, run_dir, reference_dir, kill_signal, trials - kills, rng, max_delay_s, num_epochs,
                          root / "logs", on_kill)
        chains.append(chain)
        kills += len(chain.kills)
        if not keep:  # checkpoints are large; the verdict is kept in the Chain
            shutil.rmtree(run_dir, ignore_errors=True)
    return chains
