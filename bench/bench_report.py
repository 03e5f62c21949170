"""Benchmark of report generation: 1,000 planted runs of 100 validation points each.

Plants 10 entries x 20 variants x 5 seeds under a temporary runs folder (every validation line with
the full set of val/ keys, 19 per-class IoUs included, plus two training lines per epoch, and each run's
summary file as the trainer writes it; ``--no-summaries`` plants runs without one), then times
reading them (LocalStore), building every entry's tables and the whole write-up (Markdown, LaTeX and
CSV; figures are timed separately for one entry with --figures), without and with the summary cache
(cold: empty, warm: every run cached). Prints the times; it asserts nothing.

    python bench/bench_report.py [--runs 1000] [--points 100] [--figures] [--no-summaries] [--keep DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):  # the planted run directories are the tests' fixtures (tests/planting.py)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from mtl.ablate.entry import load_entries  # noqa: E402
from mtl.data.miniscapes import CLASS_NAMES  # noqa: E402
from planting import plant_run, training_point, validation_point  # noqa: E402
from report.store import LocalStore  # noqa: E402
from report.tables import entry_tables, to_csv, to_latex, to_markdown  # noqa: E402
from report.writeup import write_report  # noqa: E402

ENTRIES, SEEDS = 10, 5


class Timer:
    """Wall and CPU seconds of a block (CPU time is the fairer figure on a shared machine)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:.2f} s wall, {self.cpu:.2f} s CPU"


def plant(root: Path, ablations: Path, runs: int, points: int, summaries: bool = True) -> None:
    rng = random.Random(0)
    variants = max(1, runs // (ENTRIES * SEEDS))
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "quick.yaml").write_text("num_epochs: 2\n")
    for entry in range(ENTRIES):
        entry_id = f"problem{entry + 1}.bench"
        lrs = [round(0.001 * (v + 1), 6) for v in range(variants)]
        (ablations / f"{entry_id}.yaml").write_text(
            f"question: Which learning rate?\nitem: '{entry + 1}'\nbase: quick\nseeds: {list(range(SEEDS))}\n"
            f"grid:\n  optimizer_lr: {json.dumps(lrs)}\nreport:\n  figures: [curves, bars]\n")
        for lr in lrs:
            for seed in range(SEEDS):
                lines = []
                for epoch in range(1, points + 1):
                    step = epoch * 100
                    lines += [training_point(step - 50, epoch), training_point(step, epoch)]
                    classes = {f"iou_class/{name}": rng.uniform(0, 100) for name in CLASS_NAMES}
                    lines.append(validation_point(step, epoch, rng.uniform(0, 50), rng.uniform(40, 80),
                                                  rng.uniform(10, 40), **classes))
                plant_run(root, entry_id, f"optimizer_lr={lr}", seed, overrides={"optimizer_lr": lr}, points=lines,
                          model={"params": 22_438_544, "gflops": 47.1}, summary=summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100, help="validation points per run")
    parser.add_argument("--figures", action="store_true", help="also time the figures of one entry")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the store")
    parser.add_argument("--no-summaries", action="store_true",
                        help="plant runs without summary files (runs written before the trainer kept them)")
    parser.add_argument("--keep", type=Path, help="plant into (or reuse) this folder instead of a temporary one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        base = args.keep or Path(tmp)
        runs, ablations, out = base / "runs", base / "ablations", base / "reports"
        if not runs.exists():
            started = time.perf_counter()
            plant(runs, ablations, args.runs, args.points, summaries=not args.no_summaries)
            seconds = time.perf_counter() - started
            print(f"planted {args.runs} runs x {args.points} validation points in {seconds:.1f} s")
        entries = load_entries(ablations)

        with Timer() as timer:
            results = LocalStore(runs).load()
        print(f"store: {len(results.runs)} runs, {len(results.points)} validation points read in {timer}")

        with Timer() as timer:
            for entry_id in entries:
                tables = entry_tables(results, entry_id)
                for shown in (tables.runs_display, tables.variants_display):
                    to_markdown(shown)
                    to_latex(shown)
                to_csv(tables.runs)
        print(f"tables: {len(entries)} entries (Markdown, LaTeX, CSV) in {timer}")

        with Timer() as timer:
            results = LocalStore(runs).load()
            write_report(entries.values(), results, out, draw_figures=False)
        print(f"report generation (store + tables + write-up, no figures), no cache: {timer}")

        cache = base / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        for attempt in ("cold", "warm"):
            with Timer() as timer:
                results = LocalStore(runs, cache_dir=cache).load()
                write_report(entries.values(), results, out, draw_figures=False)
            print(f"report generation with the summary cache, {attempt}: {timer}")

        if args.figures:
            entry = next(iter(entries.values()))
            with Timer() as timer:
                write_report([entry], results, out / "one", draw_figures=True)
            print(f"figures of one entry ({len(results.for_ablation(entry.id).runs)} runs, curves and bars, "
                  f"PNG and PDF): {timer}")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            LocalStore(runs).load()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
