"""Single-task runs in the report, and the multi-task gain Delta_m over single-task baselines.

A single-task run (config key ``tasks``: ``semseg`` or ``depth``) has no grader; its row holds its own
metric at its own best point (IoU highest, SI-logRMSE lowest).

An entry names the entry whose single-task runs are its baselines (``single_task_baselines``). The baseline
of a multi-task run for a task is the finished run of that entry that trains the task alone, with the same
seed and the same value of every config key but the keys of how tasks are combined
(:data:`mtl.config.TASK_COMBINATION_KEYS`: the tasks, the weighting method and the loss weights): the same
architecture, data, optimisation and budget. None, or more than one, is a note, never a guess.

The gain of a multi-task run (Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A Survey",
TPAMI 2021; ``calculate_multi_task_performance`` of their code) is, in percent,

    Delta_m = 100 / T * sum_t (-1)^{l_t} (M_mt,t - M_st,t) / M_st,t,  l_t = 1 where lower is better,

over T = 2 tasks, with M the IoU (higher is better) and the SI-logRMSE (lower is better), each run at its
own best point. Runs are paired by seed (a multi-task run and its baselines share their data order), so a
variant's Delta_m is the mean over its seeds and their standard deviation is its seed noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from mtl.config import BOTH_TASKS, RUN_INVARIANT_KEYS, TASK_COMBINATION_KEYS, TASK_NAMES, Config
from mtl.run.model import STATE_COLUMN, RunState

# Each task's metric (a column of the runs frame) and whether higher (+1) or lower (-1) is better.
TASK_METRICS = {"semseg": ("iou", 1.0), "depth": ("si_logrmse", -1.0)}
# What a multi-task run and its baseline must share: every config key but where and how it ran and how its
# tasks are combined.
MATCHED_KEYS = tuple(k for k in Config.model_fields
                     if k not in RUN_INVARIANT_KEYS and k not in TASK_COMBINATION_KEYS and k != "seed")


def delta_m(multi: Mapping[str, float], single: Mapping[str, float]) -> float:
    """Delta_m in percent of a multi-task run's metrics (``iou``, ``si_logrmse``) over its baselines'."""
    gains = []
    for column, sign in TASK_METRICS.values():
        gains.append(sign * (multi[column] - single[column]) / single[column])
    return 100.0 * sum(gains) / len(gains)


def run_tasks(value: Any) -> str:
    """The ``tasks`` of a run's row: a run recorded before the key existed trained both."""
    return value if isinstance(value, str) else BOTH_TASKS


def single_task_variants(runs: pd.DataFrame) -> list[str]:
    """The variants whose runs each train one task, in table order."""
    if "tasks" not in runs.columns:
        return []
    tasks = runs["tasks"].map(run_tasks)
    single = runs.loc[tasks != BOTH_TASKS, "variant"]
    return [str(v) for v in dict.fromkeys(single) if (tasks[runs["variant"] == v] != BOTH_TASKS).all()]


@dataclass
class Gain:
    """Delta_m of an entry's multi-task runs over the single-task runs of ``baselines``."""

    baselines: str
    per_run: dict[str, float] = field(default_factory=dict)  # run name -> Delta_m (%)
    per_variant: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # mean, std, seeds
    notes: list[str] = field(default_factory=list)  # runs without a baseline, and why

    def describe(self) -> str:
        """One line per entry: each variant's Delta_m with its seed noise."""
        parts = [f"{variant} {_signed(mean)} % ± {_plain(std)} ({seeds} seed{'s' if seeds != 1 else ''})"
                 for variant, (mean, std, seeds) in self.per_variant.items()]
        return ", ".join(parts) if parts else "no multi-task run has its baselines yet"


def _signed(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "–"


def _plain(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "–"


def entry_gain(runs: pd.DataFrame, baselines: Optional[pd.DataFrame], baselines_id: str) -> Gain:
    """The gain of the finished multi-task runs of ``runs`` over the single-task runs of ``baselines`` (the
    runs frame of entry ``baselines_id``; None or empty when it has none recorded)."""
    gain = Gain(baselines_id)
    if baselines is None or baselines.empty:
        gain.notes.append(f"Δm not computed: no runs of {baselines_id}, whose single-task runs are the baselines, "
                          "were read (`mtl-ablate run` it first)")
        return gain
    candidates = _finished_single_task(baselines)
    for _, row in runs.iterrows():
        if run_tasks(row.get("tasks")) != BOTH_TASKS or row[STATE_COLUMN] != RunState.FINISHED:
            continue
        found = {task: _baseline(row, candidates, task) for task in TASK_NAMES}
        missing = [f"{task}: {why}" for task, why in found.items() if isinstance(why, str)]
        if missing:
            gain.notes.append(f"Δm not computed for {row['run']}: {'; '.join(missing)}")
            continue
        single = {TASK_METRICS[task][0]: float(base[TASK_METRICS[task][0]]) for task, base in found.items()
                  if not isinstance(base, str)}
        gain.per_run[str(row["run"])] = delta_m({c: float(row[c]) for c in single}, single)
    for variant in dict.fromkeys(runs["variant"]):
        values = np.array([gain.per_run[r] for r in runs.loc[runs["variant"] == variant, "run"] if r in gain.per_run])
        if len(values):
            std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            gain.per_variant[str(variant)] = (float(values.mean()), std, len(values))
    return gain


def _finished_single_task(baselines: pd.DataFrame) -> pd.DataFrame:
    if "tasks" not in baselines.columns:
        return baselines.iloc[0:0]
    finished = baselines[baselines[STATE_COLUMN] == RunState.FINISHED]
    return finished[finished["tasks"].map(run_tasks) != BOTH_TASKS]


def _baseline(row: pd.Series, candidates: pd.DataFrame, task: str) -> pd.Series | str:
    """The one baseline run of ``row`` for ``task``, or why there is none."""
    same = candidates[(candidates["tasks"] == task) & (candidates["seed"] == row["seed"])]
    matching = [base for _, base in same.iterrows() if all(_same(row.get(k), base.get(k)) for k in MATCHED_KEYS)]
    if not matching:
        return f"no finished run of seed {row['seed']} with tasks={task} and the same config"
    if len(matching) > 1:
        return f"{len(matching)} runs match ({', '.join(str(b['run']) for b in matching)}), so none is the baseline"
    metric = matching[0][TASK_METRICS[task][0]]
    if not (isinstance(metric, (int, float)) and math.isfinite(metric) and metric != 0):
        return f"its baseline {matching[0]['run']} has no usable {TASK_METRICS[task][0]} ({metric})"
    return matching[0]


def _same(a: Any, b: Any) -> bool:
    """Config cells are equal: the same value, or both missing (NaN where a run lacks the key)."""
    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return bool(a == b)
