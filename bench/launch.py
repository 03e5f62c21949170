"""Tiny runs one after another, each training in a new interpreter against each forked from the server.

Both passes go through the real scheduler and local backend (the path ``mtl-ablate run`` takes): one
pass with ``LocalBackend(fork=False)`` (``--fresh-interpreters``: ``python -m mtl.cli`` per run), one
with ``fork=True`` (the default: forked from a server that imported torch once). The fork pass counts
the server's own start, which its first run waits for. Passes alternate ABBA with fresh run folders.

    python bench/launch.py [--runs 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from rich.console import Console

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import abba, bench_config, print_header, scratch_dir, spread
from mtl.ablate.backends import LocalBackend, placements
from mtl.ablate.display import Monitor
from mtl.ablate.scheduler import Scheduler
from mtl.run.model import Outcome
from scheduling import TINY_RUN, make_specs  # bench/scheduling.py's tiny runs (2 epochs, 4 steps each)


def one_pass(root: Path, runs: int, fork: bool) -> float:
    """Makespan of ``runs`` runs on one CPU slot, with a fresh fork server where ``fork``."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # each pass pays for its own server start
    backend = LocalBackend(placements(["cpu"], 1, cpus=1), fork=fork)
    scheduler = Scheduler(backend, Monitor(Console(file=io.StringIO(), width=200), live=False), poll_interval=0.2)
    start = time.perf_counter()
    outcomes = scheduler.run(make_specs(root, runs))
    makespan = time.perf_counter() - start
    failed = [o for o in outcomes if o.state is not Outcome.FINISHED]
    if failed:
        raise SystemExit("; ".join(f"{o.spec.name}: {o.state} {o.message}" for o in failed))
    return makespan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="tiny runs per pass, one at a time")
    parser.add_argument("--rounds", type=int, default=2, help="passes per side, in ABBA order")
    args = parser.parse_args(argv)
    print_header(f"launch: {args.runs} tiny runs one at a time, new interpreters vs forked from the server", args)
    with scratch_dir("launch") as tmp:
        from mtl.data import resolve_dataset_root

        resolve_dataset_root(bench_config(**TINY_RUN))  # the dataset is built once, outside the passes
        counter = iter(range(10**6))
        fresh, forked = abba(lambda: one_pass(Path(tmp) / f"p{next(counter)}", args.runs, False),
                             lambda: one_pass(Path(tmp) / f"p{next(counter)}", args.runs, True), args.rounds)
    print(f"new interpreter each: makespan {' '.join(f'{m:.1f}' for m in fresh)} s "
          f"({sum(fresh) / len(fresh) / args.runs:.2f} s a run)")
    print(f"forked from server:   makespan {' '.join(f'{m:.1f}' for m in forked)} s "
          f"({sum(forked) / len(forked) / args.runs:.2f} s a run, the server's start included)")
    print(f"forked / new interpreter, paired by round: {spread([b / a for a, b in zip(fresh, forked)])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
