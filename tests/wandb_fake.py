"""An in-memory stand-in for the part of wandb's public API that :mod:`report.wandb_store` uses, for
tests and benchmarks (nothing here talks to a server).

It has the method names, arguments and attributes of ``wandb.Api().runs`` (wandb 0.31) and of the
``Run`` objects it lists, and counts every request a real client would send, optionally waiting
``latency_s`` for each:

- a listing page (``per_page`` runs) is one request;
- a lazily listed run (``lazy=True``, wandb's default) is reloaded, one request, the first time its
  ``config``, ``summary`` or ``summary_metrics`` is read; an eager listing carries them;
- a ``scan_history`` is ``requests_per_scan`` requests (one by default; wandb 0.31 also asks for the
  run's last step first, so two is closer to a real server).

Runs are filled the way mtl.train.tracking logs them: each metrics.jsonl point without ``step``/``time``, plus
``trainer/step``; W&B's ``_step`` counts the log calls; the summary holds the last value of every key,
``val/grader`` as ``{"max": ...}`` (define_metric summary="max") and the validation histogram.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

# W&B's words for the states of status.json.
STATES_IN_WANDB = {"finished": "finished", "failed": "crashed", "diverged": "crashed", "interrupted": "killed",
                   "running": "running"}


class FakeWandbApi:
    def __init__(self, runs: Iterable[FakeWandbRun] = (), latency_s: float = 0.0, requests_per_scan: int = 1,
                 app_url: str = "https://wandb.example/"):
        self.latency_s, self.requests_per_scan, self.app_url = latency_s, requests_per_scan, app_url
        self.requests = 0
        self.in_flight = self.most_in_flight = 0  # requests waiting for their answer, now and at most
        self.listings: list[tuple[str, Any, int, bool]] = []  # (path, filters, per_page, lazy) of each runs() call
        self._lock = threading.Lock()
        self._runs: list[FakeWandbRun] = []
        for run in runs:
            self.add(run)

    def add(self, run: FakeWandbRun) -> FakeWandbRun:
        run._api = self
        self._runs.append(run)
        return run

    def request(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.latency_s:
            time.sleep(self.latency_s)
        with self._lock:
            self.in_flight -= 1

    def runs(self, path: str | None = None, filters: dict[str, Any] | None = None, order: str = "+created_at",
             per_page: int = 50, include_sweeps: bool = False, lazy: bool = True) -> FakeRuns:
        self.listings.append((path, filters, per_page, lazy))
        entity, _, project = (path or "").rpartition("/")
        groups = _groups_of(filters)
        chosen = [r for r in self._runs if r.project == project and (not entity or r.entity == entity)
                  and (groups is None or r.group in groups)]
        return FakeRuns(self, chosen, per_page, lazy)


def _groups_of(filters: dict[str, Any] | None) -> set[str] | None:
    if not filters:
        return None
    if set(filters) != {"group"} or set(filters["group"]) != {"$in"}:
        raise ValueError(f"the stand-in API understands only {{'group': {{'$in': [...]}}}}, got {filters!r}")
    return set(filters["group"]["$in"])


class FakeRuns:
    """Pages of runs fetched as iteration reaches them, like ``wandb.apis.public.Runs``."""

    def __init__(self, api: FakeWandbApi, runs: list[FakeWandbRun], per_page: int, lazy: bool):
        self._api, self._runs, self._per_page, self._lazy = api, runs, per_page, lazy

    def __iter__(self) -> Iterator[FakeWandbRun]:
        for start in range(0, max(len(self._runs), 1), self._per_page):
            self._api.request()
            for run in self._runs[start:start + self._per_page]:
                run._loaded = not self._lazy
                yield run

    def __len__(self) -> int:
        return len(self._runs)


class FakeWandbRun:
    def __init__(self, *, run_id: str, name: str, group: str | None, job_type: str | None, state: str,
                 config: dict[str, Any], history: list[dict[str, Any]], model: dict[str, Any] | None = None,
                 entity: str = "team", project: str = "mtl"):
        self.id, self.name, self.group, self.job_type, self.state = run_id, name, group, job_type, state
        self.entity, self.project = entity, project
        self._config = {**config, "_wandb": {"cli_version": "0.31.0"}}
        self._history = [{**row, "_step": i} for i, row in enumerate(history)]
        self._summary: dict[str, Any] = {}
        for row in self._history:
            self._summary.update(row)
        graders = [row["val/grader"] for row in self._history if isinstance(row.get("val/grader"), (int, float))]
        if graders:
            self._summary["val/grader"] = {"max": max(graders)}
        self._summary["val/depth_histogram_m"] = {"_type": "histogram", "bins": [0, 1], "values": [1]}
        if model:
            self._summary.update({"model/params": model["params"], "model/gflops": model["gflops"]})
        self._api: FakeWandbApi | None = None
        self._loaded = False

    @classmethod
    def from_run_dir(cls, run_dir: Path, entity: str = "team", project: str = "mtl",
                     earlier_points: list[dict[str, Any]] = ()) -> FakeWandbRun:
        """The W&B mirror of a run directory. ``earlier_points``: metrics.jsonl points W&B received before
        a resume (the local trace has lost them since), logged ahead of the directory's points."""
        # As mtl.train.tracking logs it: the resolved config with the run directory as log_dir.
        config = {**yaml.safe_load((run_dir / "config.yaml").read_text()), "log_dir": str(run_dir)}
        status = json.loads((run_dir / "status.json").read_text())
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        history = [{**{k: v for k, v in p.items() if k not in ("step", "time")}, "trainer/step": p["step"]}
                   for p in [*earlier_points, *lines]]
        return cls(run_id=status.get("wandb_run_id") or run_dir.name[-8:], name=run_dir.name,
                   group=config["wandb_group"], job_type=config["wandb_job_type"],
                   state=STATES_IN_WANDB[status["state"]], config=config, history=history, model=status.get("model"),
                   entity=entity, project=project)

    # -- what wandb.apis.public.Run offers
    @property
    def path(self) -> list[str]:
        return [self.entity, self.project, self.id]

    @property
    def url(self) -> str:
        return f"{self._api.app_url if self._api else 'https://wandb.example/'}{self.entity}/{self.project}/runs/{self.id}"

    def _load_full_data(self) -> None:
        if not self._loaded:
            self._api.request()
            self._loaded = True

    @property
    def config(self) -> dict[str, Any]:
        self._load_full_data()
        return dict(self._config)

    @property
    def summary_metrics(self) -> dict[str, Any]:
        self._load_full_data()
        return dict(self._summary)

    summary = summary_metrics

    def scan_history(self, keys: list[str] | None = None, page_size: int = 1000, min_step: int = 0,
                     max_step: int | None = None, use_cache: bool = True) -> Iterator[dict[str, Any]]:
        if keys is not None and not isinstance(keys, list):
            raise ValueError("keys must be specified in a list")
        for _ in range(self._api.requests_per_scan):
            self._api.request()
        rows = []
        for row in self._history:
            if keys is None or all(k in row for k in keys):  # like the API: only rows holding every key
                rows.append(dict(row) if keys is None else {**{k: row[k] for k in keys}, "_step": row["_step"]})
        return iter(rows)
