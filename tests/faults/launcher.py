"""Start ``mtl-train`` processes cheaply enough to kill dozens of them.

A plain ``python -m mtl.cli`` spends seconds importing torch before it trains a step. Here, as in
``mtl-ablate run`` (mtl/ablate/forkserver.py, whose pieces this uses), a multiprocessing fork server
imports torch and the engine once; every training process is forked from it and runs
``mtl.cli.main(argv)`` -- the entry point of ``mtl-train`` -- as a separate OS process with its own pid,
so SIGKILL and SIGTERM reach it exactly as they would reach ``mtl-train``, and its exit code is what
``mtl-train`` would return. A fault's setup runs in the child before mtl-train's main.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mtl.ablate import forkserver

# What a training imports before its first step, and the fault modules a setup comes from.
PRELOAD = [*forkserver.PRELOAD, "mtl.data.integrity", "faults.launcher", "faults.storage", "faults.checks",
           "faults.preemption", "faults.process_group", "faults.runs", "faults.records",
           # A child imports its parent's main module again: pytest's, or the bench script's.
           "pytest", "hypothesis"]

STARTED_LINE = "[fault launcher] calling mtl.cli.main"

_context: Optional[multiprocessing.context.BaseContext] = None


def context() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child_main(argv: list[str], log_path: str, env: dict[str, str],
                setup: Optional[Callable[[], None]]) -> None:
    """Body of a training process: its own log and environment (``env`` over the server's), optional fault
    setup, then mtl-train."""
    forkserver.set_up_as_a_new_process(argv, {**os.environ, **env}, os.getcwd(), log_path)
    if setup is not None:
        setup()
    print(STARTED_LINE, flush=True)  # a signal before this line meets an interpreter still starting up
    forkserver.run_mtl_train(argv)


@dataclass
class TrainProcess:
    """One running (or ended) ``mtl-train``: signal it, wait for it, read its exit code and output."""

    process: Any
    log_path: Path
    started: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def send(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 600) -> int:
        """The exit code: mtl-train's own (0, 1, 2, 3, 4, 143) or -signal when a signal ended it."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"mtl-train pid {self.pid} still ran after {timeout} s; killed it (log {self.log_path})")
        return self.process.exitcode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_train(argv: list[str], log_path: Path, env: Optional[dict[str, str]] = None,
                setup: Optional[Callable[[], None]] = None) -> TrainProcess:
    """Fork an ``mtl-train argv`` process; ``setup`` (a picklable module-level callable) runs in it first."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {"WANDB_MODE": "disabled", "WANDB_SILENT": "true", **{k: v for k, v in os.environ.items()
                                                                 if k.startswith(("MTL_", "WANDB_"))}, **(env or {})}
    process = context().Process(target=_child_main, args=(list(argv), str(log_path), env, setup), daemon=False)
    started = time.monotonic()
    process.start()
    return TrainProcess(process, log_path, started)


def warm_up() -> None:
    """Start the fork server now (it imports torch and the engine once), so later timings exclude that."""
    process = context().Process(target=os.getpid)
    process.start()
    process.join()


def run_train(argv: list[str], log_path: Path, env: Optional[dict[str, str]] = None,
              setup: Optional[Callable[[], None]] = None, timeout: float = 600) -> tuple[int, float]:
    """Run ``mtl-train argv`` to its end: (exit code, wall seconds)."""
    process = start_train(argv, log_path, env, setup)
    code = process.wait(timeout)
    return code, time.monotonic() - process.started
