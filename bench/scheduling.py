"""Makespan of six tiny runs two at a time against the same six one after another, and against the ideal.

Both passes go through the real scheduler (``mtl.ablate.scheduler.Scheduler`` with the local backend,
the path ``mtl-ablate run`` takes, at its default poll interval): the sequential pass with one slot,
the parallel pass with ``--jobs`` slots; every run gets a CPU budget of ``--threads`` thread(s)
(``--num_threads`` and OMP/MKL_NUM_THREADS, as the scheduler sets them). Each run's own duration is
taken from its process start to its exact exit (a waiting thread, not the scheduler's poll), so

* ideal = sum of the sequential runs' durations / jobs   (perfect packing, no contention);
* scheduling overhead = sequential makespan / sum of its run durations (launch and poll latency);
* goal: parallel makespan within 10% of the ideal.

Passes alternate (sequential, parallel, parallel, sequential, ...) with fresh run folders each time.

    python bench/scheduling.py [--runs 6] [--jobs 2] [--threads 1] [--rounds 1] [--poll-interval 1.0]
"""

from __future__ import annotations

import argparse
import inspect
import io
import resource
import threading
import time
from pathlib import Path

from rich.console import Console

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import abba, bench_config, print_header, scratch_dir, usable_cores
from mtl.ablate.backends import LocalBackend, placements
from mtl.ablate.display import Monitor
from mtl.ablate.planner import RunSpec
from mtl.ablate.scheduler import Scheduler

GOAL_OVER_IDEAL = 1.10
# A tiny run: a few seconds of training after the interpreter and torch start.
TINY_RUN = {"synthetic_num_train": 8, "synthetic_num_val": 4, "synthetic_num_test": 4, "synthetic_height": 64,
            "synthetic_width": 96, "aug_input_crop_size": 64, "num_epochs": 2, "batch_size": 2,
            "batch_size_validation": 4, "progress": "plain"}


def os_threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class TimedJob:
    """Wraps a LocalJob: records the exact exit time with a thread blocked in ``wait``, and the most OS
    threads the run's process had (sampled), which shows whether its CPU thread budget held."""

    def __init__(self, job, started: float):
        self.job, self.started, self.ended = job, started, None
        self.max_threads = 0
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _wait(self) -> None:
        self.job.process.wait()
        self.ended = time.perf_counter()

    def _sample(self) -> None:
        while self.ended is None:
            self.max_threads = max(self.max_threads, os_threads(self.job.process.pid))
            time.sleep(0.1)

    def poll(self):
        return self.job.poll()

    def terminate(self) -> None:
        self.job.terminate()

    def describe(self) -> str:
        return self.job.describe()

    def sentinel(self):
        return self.job.sentinel()


class TimedBackend(LocalBackend):
    def __init__(self, slots):
        super().__init__(slots)
        self.jobs: list[TimedJob] = []

    def start(self, launch):
        started = time.perf_counter()
        job = TimedJob(super().start(launch), started)
        self.jobs.append(job)
        return job


def make_specs(root: Path, runs: int) -> list[RunSpec]:
    specs = []
    for seed in range(runs):
        config = bench_config(**TINY_RUN, seed=seed)
        name = f"tiny-s{seed}-{config.config_hash()}"
        run_dir = root / "bench.scheduling" / name
        specs.append(RunSpec(name=name, variant="tiny", seed=seed, config=config.replace(log_dir=str(run_dir)),
                             run_dir=run_dir, differences={}, entry_id="bench.scheduling"))
    return specs


def run_pass(root: Path, runs: int, jobs: int, threads: int, poll_interval: float) -> dict:
    slots = placements(["cpu"], jobs, cpus=jobs * threads)
    backend = TimedBackend(slots)
    monitor = Monitor(Console(file=io.StringIO(), width=200), live=False)
    scheduler = Scheduler(backend, monitor, poll_interval=poll_interval)
    specs = make_specs(root, runs)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    outcomes = scheduler.run(specs)
    makespan = time.perf_counter() - start
    for job in backend.jobs:
        job._waiter.join()  # the children's CPU time is counted once they are reaped
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    failed = [o for o in outcomes if o.state != "finished"]
    if failed:
        raise SystemExit(f"{len(failed)} run(s) did not finish: " + "; ".join(f"{o.spec.name}: {o.state} {o.message}"
                                                                            for o in failed))
    durations = [job.ended - job.started for job in backend.jobs]
    return {"makespan": makespan, "durations": durations, "threads": {s.threads for s in slots}, "cpu": cpu,
            "os_threads": max(job.max_threads for job in backend.jobs)}


def main(argv: list[str] | None = None) -> int:
    default_poll = inspect.signature(Scheduler).parameters["poll_interval"].default
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="tiny runs per pass")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time in the parallel pass")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--rounds", type=int, default=1, help="passes per side, in ABBA order")
    parser.add_argument("--poll-interval", type=float, default=default_poll,
                        help="scheduler poll interval in seconds (default: the scheduler's own)")
    args = parser.parse_args(argv)
    print_header(f"scheduling: {args.runs} tiny runs, {args.jobs} at a time vs one after another", args)
    if args.jobs * args.threads > usable_cores():
        print(f"note: {args.jobs} jobs x {args.threads} threads exceed the {usable_cores()} cores here")

    with scratch_dir("sched") as tmp:
        root = Path(tmp)
        # Build the tiny dataset once, outside the timed passes.
        from mtl.data import resolve_dataset_root

        resolve_dataset_root(bench_config(**TINY_RUN))
        counter = iter(range(10**6))

        def sequential() -> dict:
            return run_pass(root / f"pass{next(counter)}", args.runs, 1, args.threads, args.poll_interval)

        def parallel() -> dict:
            return run_pass(root / f"pass{next(counter)}", args.runs, args.jobs, args.threads, args.poll_interval)

        seq_passes, par_passes = abba(sequential, parallel, args.rounds)

    for label, passes in (("sequential", seq_passes), ("parallel", par_passes)):
        for p in passes:
            runs = sorted(p["durations"])
            print(f"{label:<10} makespan {p['makespan']:6.1f} s; run durations {runs[0]:.1f}..{runs[-1]:.1f} s, "
                  f"sum {sum(runs):.1f} s; thread budget per run {sorted(p['threads'])} (most OS threads seen in a run "
                  f"process: {p['os_threads']}); CPU time of the runs {p['cpu']:.1f} s")
    ratios_ideal, overheads, speedups = [], [], []
    for seq, par in zip(seq_passes, par_passes):
        ideal = sum(seq["durations"]) / args.jobs
        ratios_ideal.append(par["makespan"] / ideal)
        overheads.append(seq["makespan"] / sum(seq["durations"]))
        speedups.append(seq["makespan"] / par["makespan"])
        mean_alone = sum(seq["durations"]) / len(seq["durations"])
        mean_shared = sum(par["durations"]) / len(par["durations"])
        print(f"ideal {ideal:.1f} s; parallel/ideal {par['makespan'] / ideal:.3f}; speed-up over sequential "
              f"{seq['makespan'] / par['makespan']:.2f}x; mean run {mean_alone:.1f} s alone vs {mean_shared:.1f} s "
              f"sharing the machine (x{mean_shared / mean_alone:.2f})")
        print(f"packing: parallel makespan / (sum of its own run durations / {args.jobs}) = "
              f"{par['makespan'] / (sum(par['durations']) / args.jobs):.3f} (1.0 = slots never idle)")
        print(f"CPU work per run: {seq['cpu'] / args.runs:.1f} s alone, {par['cpu'] / args.runs:.1f} s sharing "
              f"(x{par['cpu'] / seq['cpu']:.2f}); cores a running run got: {seq['cpu'] / sum(seq['durations']):.2f} "
              f"alone, {par['cpu'] / sum(par['durations']):.2f} sharing (1.00 each on an otherwise idle machine)")
    worst = max(ratios_ideal)
    print(f"sequential makespan / sum of its runs: {max(overheads):.3f} (scheduler launch + poll latency)")
    print(f"goal parallel makespan <= {GOAL_OVER_IDEAL:.2f} x ideal: {'met' if worst <= GOAL_OVER_IDEAL else 'MISSED'} "
          f"({worst:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
