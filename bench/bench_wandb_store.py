"""Benchmark of the W&B result store against a stand-in of wandb's public API with a fixed delay per
request (tests/wandb_fake.py): 1,000 runs x 100 validation points by default, 50 ms per request.

Each listing page is one request, a lazily listed run costs one more the first time its config or
summary is read, and each history scan is one request (``--requests-per-scan 2`` counts wandb 0.31's
extra query for the run's last step too). Prints the requests made and the wall time of
``WandbStore.load``; with ``--previous`` also of the previous access pattern (a lazy listing in pages of
50, then each run read in turn: its config reloads it, then its scan), which takes minutes at 50 ms.
Asserts nothing; the goal is under 10 s for the default sizes.

    python bench/bench_wandb_store.py [--runs 1000] [--points 100] [--latency-ms 50] [--workers 16]
                                      [--page-size 500] [--requests-per-scan 1] [--previous]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):  # the stand-in W&B API is a test fixture (tests/wandb_fake.py)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from mtl.config import Config  # noqa: E402
from report.store import build_tables  # noqa: E402
from report.wandb_store import LISTING_PAGE_SIZE, SCAN_WORKERS, WandbStore, wandb_run_input  # noqa: E402
from wandb_fake import FakeWandbApi, FakeWandbRun  # noqa: E402

ENTRIES, SEEDS = 10, 5
CLASSES = [f"class{i}" for i in range(19)]


def make_runs(count: int, points: int) -> list[FakeWandbRun]:
    """``count`` runs over 10 entries x 5 seeds; each validation point with 25 val/ keys and, as the
    trainer logs them, two training points per epoch in the same history."""
    rng = random.Random(0)
    defaults = Config().model_dump(mode="json")
    variants = max(1, count // (ENTRIES * SEEDS))
    runs = []
    for index in range(count):
        entry, variant, seed = index // (variants * SEEDS), (index // SEEDS) % variants, index % SEEDS
        lr = round(0.001 * (variant + 1), 6)
        group, job_type = f"problem{entry + 1}.bench", f"optimizer_lr={lr}"
        name = f"{job_type}-s{seed}-{index:08x}"
        config = {**defaults, "optimizer_lr": lr, "seed": seed, "wandb_group": group, "wandb_job_type": job_type,
                  "log_dir": f"/runs/{group}/{name}"}  # as the trainer logs it: the run's own directory
        history = []
        for epoch in range(1, points + 1):
            step = epoch * 100
            for train_step in (step - 50, step):
                history.append({"epoch": epoch, "train/loss": 1.0, "train/loss_semseg": 0.5, "train/loss_depth": 0.5,
                                "train/lr": lr, "trainer/step": train_step})
            point = {"epoch": epoch, "val/grader": rng.uniform(0, 50), "val/iou": rng.uniform(40, 80),
                     "val/si_logrmse": rng.uniform(10, 40), "val/loss": 1.0, "val/loss_semseg": 0.5,
                     "val/loss_depth": 0.5, **{f"val/iou_class/{c}": rng.uniform(0, 100) for c in CLASSES}}
            history.append({**point, "trainer/step": step})
        runs.append(FakeWandbRun(run_id=f"{index:08x}", name=name, group=group,
                                 job_type=job_type, state="finished", config=config, history=history,
                                 model={"params": 22_438_544, "gflops": 47.1}))
    return runs


def previous_pattern(api: FakeWandbApi, path: str, groups: list[str]) -> None:
    """The access pattern the store had before: wandb's default (lazy) listing, runs read one by one."""
    build_tables([wandb_run_input(run) for run in api.runs(path, filters={"group": {"$in": groups}})])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100, help="validation points per run")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="delay of every request")
    parser.add_argument("--workers", type=int, default=SCAN_WORKERS, help="history scans in flight at once")
    parser.add_argument("--page-size", type=int, default=LISTING_PAGE_SIZE, help="runs per listing request")
    parser.add_argument("--requests-per-scan", type=int, default=1)
    parser.add_argument("--previous", action="store_true", help="also time the previous access pattern (slow)")
    args = parser.parse_args()

    started = time.perf_counter()
    runs = make_runs(args.runs, args.points)
    groups = sorted({r.group for r in runs})
    print(f"{args.runs} runs x {args.points} validation points ({len(groups)} groups) made in "
          f"{time.perf_counter() - started:.1f} s; {args.latency_ms:g} ms per request, "
          f"{args.requests_per_scan} request(s) per history scan")

    api = FakeWandbApi(runs, latency_s=args.latency_ms / 1000, requests_per_scan=args.requests_per_scan)
    store = WandbStore("team", "mtl", api=api, page_size=args.page_size, workers=args.workers)
    started, cpu = time.perf_counter(), time.process_time()
    tables = store.load(groups)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    pages = math.ceil(args.runs / args.page_size)
    print(f"WandbStore (pages of {args.page_size}, {args.workers} scans in flight): {api.requests} requests "
          f"({pages} listing page(s) + {api.requests - pages} for history scans), {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU; {len(tables.runs)} runs, {len(tables.points)} validation points")

    old_requests = math.ceil(args.runs / 50) + args.runs * (1 + args.requests_per_scan)
    estimate = old_requests * args.latency_ms / 1000
    if args.previous:
        api = FakeWandbApi(runs, latency_s=args.latency_ms / 1000, requests_per_scan=args.requests_per_scan)
        started = time.perf_counter()
        previous_pattern(api, "team/mtl", groups)
        print(f"previous pattern (lazy listing in pages of 50, one run at a time): {api.requests} requests, "
              f"{time.perf_counter() - started:.2f} s wall")
    else:
        print(f"previous pattern, counted (--previous runs it): {old_requests} sequential requests "
              f"({math.ceil(args.runs / 50)} pages of 50 + a reload and a scan per run), at least {estimate:.0f} s")


if __name__ == "__main__":
    main()
