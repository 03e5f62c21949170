"""Start ``mtl-train`` processes from a fork server that has imported torch and the engine once.

A new interpreter spends seconds importing torch, torch._dynamo (the optimizers load it) and the engine
before its first step; a short run (a racing segment, the quick profile) spends most of its time there.
Here a multiprocessing fork server, started by the first launch, imports them once; each training is forked
from it and runs ``mtl.cli.main(argv)`` -- the entry point of ``mtl-train`` -- as its own OS process with
its own pid, environment, working directory and log, in mtl-ablate's process group as a plain child would
be. The server never runs a tensor operation (nor initializes CUDA), so forking from it is safe.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

# What a training imports: before its first step, and pandas for the metrics.csv it packs at its end (0.3 s).
PRELOAD = ["torch", "torch._dynamo", "torchvision", "numpy", "PIL.Image", "yaml", "filelock", "pandas", "mtl.cli",
           "mtl.train.engine", "mtl.data.synthetic", "mtl.data.miniscapes", "mtl.train.submission"]


def available() -> bool:
    """Whether trainings can be forked here: a platform with a fork server, and a main module the server can
    import again by its path (not one read from standard input)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not os.path.exists(main_file):
        return False
    return "forkserver" in multiprocessing.get_all_start_methods()


def _forkserver() -> Any:
    """multiprocessing's one fork server (started by the first process it forks), told what to import."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _train(argv: list[str], env: dict[str, str], cwd: str, log_path: str) -> None:
    """Body of a forked training."""
    set_up_as_a_new_process(argv, env, cwd, log_path)
    run_mtl_train(argv)


def set_up_as_a_new_process(argv: list[str], env: dict[str, str], cwd: str, log_path: str) -> None:
    """In a forked child: what ``subprocess.Popen([python, -m, mtl.cli, *argv], env=env, cwd=cwd, stdout=log,
    stderr=log, stdin=devnull)`` would have set up."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = ["mtl-train", *argv]
    # Inherited from the server: "forkserver"; the DataLoader's workers start as in a fresh interpreter.
    multiprocessing.set_start_method(None, force=True)


def run_mtl_train(argv: list[str]) -> None:
    """In a forked child: mtl-train's main, then the end an interpreter would have (exits)."""
    from mtl.cli import main

    try:
        code = main(list(argv))
    finally:
        # multiprocessing ends its children with os._exit, which skips atexit; an interpreter runs them.
        atexit._run_exitfuncs()
    # SystemExit ends the process through multiprocessing's bootstrap, which stops daemonic children (the
    # DataLoader's workers) as an interpreter's exit would.
    sys.exit(code)


class ForkedJob:
    """One training forked from the server: the scheduler's job (poll, terminate, describe)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.process = _forkserver().Process(target=_train, args=(list(argv), env, os.getcwd(), str(log_path)))
        self.process.start()
        # Not a child multiprocessing joins when mtl-ablate exits: as a subprocess would, a training outlives an
        # mtl-ablate that ends early (its run's lock tells the next mtl-ablate that it still trains).
        multiprocessing.process._children.discard(self.process)  # type: ignore[attr-defined]

    def poll(self) -> Optional[int]:
        code = self.process.exitcode
        return None if code is None else int(code)

    def sentinel(self) -> Optional[int]:
        return self.process.sentinel  # the server writes the exit status to it

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        if self.process.exitcode is None:
            os.kill(self.process.pid, signum)

    def describe(self) -> str:
        return f"pid {self.process.pid}"
