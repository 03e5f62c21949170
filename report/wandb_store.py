"""The W&B result store: runs of one W&B project read through wandb's public API, as the same tables
as :class:`report.store.LocalStore` builds from run directories.

Round trips are what cost time against a W&B server (tens of milliseconds each), so the store makes
few of them: the runs are listed eagerly (``lazy=False``) in large pages, which carries each run's
config and summary in the listing itself (a lazy listing reloads every run when its config is read),
and the validation history of the runs is scanned by a bounded pool of threads, one scan per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mtl.run.model import GRADER_KEY, RunState
from report.store import VAL_PREFIX, ResultTables, RunInput, StoreError, build_tables

# mtl.train.tracking logs every point with its optimizer step under this key (W&B's own _step counts calls).
WANDB_STEP_KEY = "trainer/step"
# W&B run states in the vocabulary of a run's status.
WANDB_STATES = {
    "finished": RunState.FINISHED,
    "running": RunState.RUNNING,
    "crashed": RunState.FAILED,
    "failed": RunState.FAILED,
    "killed": RunState.INTERRUPTED,
    "preempting": RunState.INTERRUPTED,
    "preempted": RunState.INTERRUPTED,
}
# Runs per listing request. Each run in a page carries its config and summary (a few kB).
LISTING_PAGE_SIZE = 500
# History scans in flight at once: enough to hide the latency (wandb 0.31's scan_history is two round
# trips: the run's last step, then the scan), few enough not to flood the server.
SCAN_WORKERS = 32
# Steps per history page of one scan: a run's validation points fit in one page.
HISTORY_PAGE_SIZE = 100_000


def wandb_run_input(run: Any) -> RunInput:
    """One ``wandb.apis.public.Run`` of an eager listing as a RunInput: group = ablation id, job type =
    variant, the resolved config from ``run.config``, and every validation point from one
    ``scan_history`` over all scalar ``val/`` keys together (they are logged in one call per point)."""
    config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
    summary = run.summary_metrics  # a plain dict; ``run.summary`` may reach the server
    # Only scalar val/ keys: the validation histogram (also under val/) is logged in another call, and
    # scan_history returns only rows holding every requested key. val/grader's summary is its maximum
    # ({"max": ...}), so it is added by name.
    val_keys = sorted(k for k in summary if k.startswith(VAL_PREFIX) and _is_scalar(summary[k]))
    points: list[dict[str, Any]] = []
    if val_keys or GRADER_KEY in summary:
        if GRADER_KEY not in val_keys:
            val_keys.append(GRADER_KEY)
        keys = val_keys + [WANDB_STEP_KEY] + (["epoch"] if "epoch" in summary else [])
        points = last_point_per_step(run.scan_history(keys=keys, page_size=HISTORY_PAGE_SIZE), val_keys)
    return RunInput(
        ablation=run.group or config.get("wandb_group") or "",
        run=run.name,
        variant=run.job_type or config.get("wandb_job_type") or run.name,
        seed=config.get("seed"),
        state=WANDB_STATES[run.state].value if run.state in WANDB_STATES else str(run.state),
        config=config,
        points=points,
        params=summary.get("model/params"),
        gflops=summary.get("model/gflops"),
        source=run_path(run),
        url=run.url,
    )


def last_point_per_step(rows: Iterable[dict[str, Any]], val_keys: list[str]) -> list[dict[str, Any]]:
    """Validation points from history rows, one per ``trainer/step``, in step order.

    A resumed run logs again the steps after its last checkpoint, and W&B keeps the earlier points too;
    the local trace is truncated to the checkpoint, so the later point of a step is the one it holds.
    """
    by_step: dict[Any, dict[str, Any]] = {}
    for row in rows:
        step = row.get(WANDB_STEP_KEY)
        point = {k: row[k] for k in val_keys if k in row}
        point["step"] = int(step) if step is not None else None
        point["epoch"] = row.get("epoch")
        by_step.pop(point["step"], None)  # re-inserted: insertion order is then the order of last logging
        by_step[point["step"]] = point
    return sorted(by_step.values(), key=lambda p: (p["step"] is None, p["step"] or 0))


def run_path(run: Any) -> str:
    return "/".join(map(str, run.path)) if isinstance(run.path, (list, tuple)) else str(run.path)


class WandbStore:
    """Runs of one W&B project, read through the public API (needs credentials and a reachable server).

    ``api``: an object with wandb.Api's ``runs`` method (tests and benchmarks pass a stand-in).
    """

    def __init__(self, entity: str | None, project: str, api: Any = None, *,
                 page_size: int = LISTING_PAGE_SIZE, workers: int = SCAN_WORKERS):
        if page_size < 1 or workers < 1:
            raise ValueError(f"page_size and workers must be >= 1, got {page_size} and {workers}")
        self.entity, self.project = entity, project
        self.page_size, self.workers = page_size, workers
        self._api = api

    def _connect(self) -> Any:
        if self._api is not None:
            return self._api
        from mtl.train.tracking import has_wandb_credentials

        if not has_wandb_credentials():
            raise StoreError("W&B store needs credentials: set WANDB_API_KEY or run `wandb login`")
        import wandb

        try:
            self._api = wandb.Api(timeout=30)
        except Exception as exc:  # noqa: BLE001 - the API raises several unrelated types when offline
            raise StoreError(f"cannot reach the W&B server: {exc}") from None
        return self._api

    def load(self, ablations: Iterable[str] | None = None) -> ResultTables:
        api = self._connect()
        path = f"{self.entity}/{self.project}" if self.entity else self.project
        filters = {"group": {"$in": sorted(ablations)}} if ablations is not None else None
        try:
            # Listed before any scan starts, on this thread: the API's connection is set up once here.
            runs = list(api.runs(path, filters=filters, per_page=self.page_size, lazy=False))
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"cannot list W&B runs of {path}: {exc}") from None
        return build_tables(self._read_all(runs))

    def _read_all(self, runs: list[Any]) -> list[RunInput]:
        if not runs:
            return []

        def read(run: Any) -> RunInput:
            try:
                return wandb_run_input(run)
            except Exception as exc:  # noqa: BLE001 - network and API errors of every kind
                raise StoreError(f"cannot read W&B run {run_path(run)}: {exc}") from None

        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(runs)), thread_name_prefix="wandb-scan")
        try:
            return list(pool.map(read, runs))  # in listing order; the first error is raised
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after an error, start no more scans


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)
