"""Start ``mtl-train`` processes cheaply enough to kill dozens of them.

A plain ``python -m mtl.cli`` spends seconds importing torch before it trains a step. Here a
multiprocessing fork server imports torch and the engine once; every training process is forked from
it and runs ``mtl.cli.main(argv)`` -- the entry point of ``mtl-train`` -- as a separate OS process with
its own pid, so SIGKILL and SIGTERM reach it exactly as they would reach ``mtl-train``, and its exit
code is what ``mtl-train`` would return. The server itself never runs a tensor operation, so forking
from it is safe.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

# Everything a training process imports before its first step (torch._dynamo comes in through
# torch.use_deterministic_algorithms, and costs as much as torch itself).
PRELOAD = ["torch", "torch._dynamo", "torchvision", "numpy", "PIL.Image", "yaml", "filelock",
           "mtl.cli", "mtl.train.engine", "mtl.data.synthetic", "mtl.data.integrity", "mtl.train.submission",
           "faults.launcher", "faults.storage", "faults.checks", "faults.preemption", "faults.runs",
           "faults.records",
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
    """Body of a training process: its own log and environment, optional fault setup, then mtl-train."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(env)
    # A fork-server child inherits "forkserver" as its start method; mtl-train's DataLoader workers must be
    # started as in a fresh interpreter (fork on Linux) -- and stopped with it, as the exit below does.
    multiprocessing.set_start_method(None, force=True)
    if setup is not None:
        setup()
    from mtl.cli import main

    print(STARTED_LINE, flush=True)  # a signal before this line meets an interpreter still starting up
    # SystemExit ends the process through multiprocessing's bootstrap, which stops daemonic children
    # (DataLoader workers) as an interpreter exit would.
    sys.exit(main(list(argv)))


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
