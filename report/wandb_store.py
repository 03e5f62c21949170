"""The W&B result store: runs of one W&B project read through wandb's public API, as the same tables
as :class:`report.store.LocalStore` builds from run directories.

Which runs: as the local store, those of each entry's current plan (:mod:`mtl.ablate.selection`: profile,
current config, another entry's identical run reused, stale runs left out), given as the selections of
``report``. A W&B run names its run directory in its config (``log_dir``: ``<entry folder>/<run name>``);
where one directory has several W&B runs (a sweep agent's run carrying on the run's own one, see
mtl.train.tracking.wandb_identity), the one no other continues stands for it, so each run is one row.

Round trips are what cost time against a W&B server (tens of milliseconds each), so the store makes
few of them: the runs are listed eagerly (``lazy=False``) in large pages, which carries each run's
config and summary in the listing itself (a lazy listing reloads every run when its config is read),
and the validation history of the runs is scanned by a bounded pool of threads, one scan per run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import PurePath
from typing import Any

from mtl.config import Config
from mtl.run.model import GRADER_KEY, RunState
from mtl.train.tracking import CONTINUES_KEY
from report.store import VAL_PREFIX, ResultTables, RunInput, RunSummary, StoreError, build_tables, summarize

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
# History scans in flight at once: wandb's own cap for parallel requests of one client ("to avoid
# overwhelming the server", wandb/apis/public/runs.py, Runs.upgrade_to_full). Each scan is two round trips
# in wandb 0.31 (the run's last step, then the scan).
SCAN_WORKERS = 10
# Steps per history page of one scan: a run's validation points fit in one page.
HISTORY_PAGE_SIZE = 100_000


def run_config(run: Any) -> dict[str, Any]:
    """The run's resolved config as its ``config.yaml`` holds it: the keys of the config schema but
    ``log_dir`` (W&B also holds wandb's own keys, a sweep's parameters and the continues link)."""
    config = dict(run.config)
    return {k: config[k] for k in Config.model_fields if k in config and k != "log_dir"}


def run_directory(run: Any) -> str | None:
    """``<entry folder>/<run name>`` of the run directory a W&B run mirrors (from the ``log_dir`` in its
    config), None for a run that does not name one."""
    log_dir = dict(run.config).get("log_dir")
    if not isinstance(log_dir, str) or not log_dir:
        return None
    return "/".join(PurePath(log_dir).parts[-2:])


def representatives(runs: list[Any]) -> dict[str, Any]:
    """Run directory -> the W&B run that stands for it: among the runs of one directory, the one no other
    continues (:data:`CONTINUES_KEY`); where several are left (their link lost), the one that reached the
    furthest step, then the one listed last (created last). Runs that name no directory stand for themselves,
    under their path."""
    groups: dict[str, list[tuple[int, Any]]] = {}
    for position, run in enumerate(runs):
        groups.setdefault(run_directory(run) or f"W&B {run_path(run)}", []).append((position, run))
    chosen = {}
    for key, members in groups.items():
        continued = {dict(run.config).get(CONTINUES_KEY) for _, run in members}
        heads = [(position, run) for position, run in members if run.id not in continued] or members
        chosen[key] = max(heads, key=lambda item: (_last_step(item[1]), item[0]))[1]
    return chosen


def _last_step(run: Any) -> float:
    step = run.summary_metrics.get(WANDB_STEP_KEY)
    return float(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else -math.inf


def wandb_run_input(run: Any) -> RunInput:
    """One ``wandb.apis.public.Run`` of an eager listing as a RunInput: group = ablation id, job type =
    variant, the resolved config from ``run.config``, and every validation point from one
    ``scan_history`` over all scalar ``val/`` keys together (they are logged in one call per point);
    points beyond the summary's ``trainer/step`` were rolled back by a resume and are dropped."""
    config = run_config(run)
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
        points = without_rolled_back(points, summary.get(WANDB_STEP_KEY))
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


def without_rolled_back(points: list[dict[str, Any]], last_step: Any) -> list[dict[str, Any]]:
    """The points up to ``last_step``, the furthest step the run's latest attempt reached (its summary's
    ``trainer/step``): an attempt stopped after its checkpoint logged steps that its resume trains again,
    and if the resume has not reached them yet they are not part of the run (the local trace dropped them)."""
    if not isinstance(last_step, (int, float)) or isinstance(last_step, bool):
        return points
    return [p for p in points if p["step"] is None or p["step"] <= last_step]


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

    def load(self, ablations: Iterable[str] | None = None, selections: dict[str, Any] | None = None) -> ResultTables:
        """The W&B runs of the groups ``ablations`` (every group when None), one per run directory; with
        ``selections`` (entry id -> :class:`mtl.ablate.selection.Selection`), exactly the run directories of each
        entry's current plan, as LocalStore.load reads them: another profile's or an older config's runs are
        not read, a run reused from another entry counts for each entry that uses it."""
        if selections is not None:
            groups: set[str] | None = set(selections) | {run.run_dir.parent.name for selection in selections.values()
                                                         for run in selection.runs}
        else:
            groups = set(ablations) if ablations is not None else None
        chosen = representatives(self._list(groups))
        if selections is None:
            return build_tables(self._every(chosen, groups))
        return build_tables(self._selected(selections, chosen))

    def _every(self, chosen: dict[str, Any], groups: set[str] | None) -> list[RunInput]:
        """One row per run directory, under the entry whose folder holds it (as the local store files a run
        under the entry that trained it); W&B runs that name no directory under their group."""
        keyed = [(key.split("/")[0] if not key.startswith("W&B ") else None, run) for key, run in chosen.items()]
        keyed = [(entry, run) for entry, run in keyed if groups is None or (entry or run.group or "") in groups]
        inputs = self._read_all([run for _, run in keyed])
        return [replace(data, ablation=entry) if entry else data for (entry, _), data in zip(keyed, inputs)]

    def _list(self, groups: set[str] | None) -> list[Any]:
        api = self._connect()
        path = f"{self.entity}/{self.project}" if self.entity else self.project
        filters = {"group": {"$in": sorted(groups)}} if groups is not None else None
        try:
            # Listed before any scan starts, on this thread: the API's connection is set up once here.
            return list(api.runs(path, filters=filters, per_page=self.page_size, lazy=False))
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"cannot list W&B runs of {path}: {exc}") from None

    def _selected(self, selections: dict[str, Any], chosen: dict[str, Any]) -> list[RunSummary]:
        """The rows of each entry's selected runs that W&B holds, as LocalStore._selected makes them."""
        wanted = [(entry_id, run, chosen[f"{run.run_dir.parent.name}/{run.run_dir.name}"])
                  for entry_id, selection in selections.items() for run in selection.runs
                  if f"{run.run_dir.parent.name}/{run.run_dir.name}" in chosen]
        unique = list({id(found): found for _, _, found in wanted}.values())
        inputs = {id(found): data for found, data in zip(unique, self._read_all(unique))}
        summaries = []
        for entry_id, run, found in wanted:
            data = replace(inputs[id(found)], ablation=entry_id, variant=run.variant, seed=run.seed)
            summary = summarize(data)
            if run.reused_from:
                same = f"same config as {run.reused_from}: its records"
                summary.row["note"] = f"{summary.row['note']}; {same}" if summary.row["note"] else same
            summaries.append(summary)
        return summaries

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
