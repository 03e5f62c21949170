"""Result stores: best-grader point per run, notes for odd runs, and equal tables from run directories and W&B."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from mtl.rundir import read_run
from report.planting import plant_run, training_point, validation_point
from report.store import LocalStore, StoreError, WandbStore, best_with_note, local_run_input

ABLATION = "problem1.lr"


def _row(tables, variant):
    rows = tables.runs[tables.runs["variant"] == variant]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.fixture()
def runs_root(tmp_path):
    root = tmp_path / "runs"
    # IoU peaks at step 20, the grader at step 30: the result is step 30 with its own IoU.
    plant_run(root, ABLATION, "peak", 0, overrides={"optimizer_lr": 0.1}, model={"params": 22_000_000, "gflops": 7.5},
              points=[training_point(10, 1), validation_point(10, 1, 10.0, 60.0, 40.0),
                      training_point(20, 2), validation_point(20, 2, 20.0, 80.0, 30.0),
                      training_point(30, 3), validation_point(30, 3, 25.0, 70.0, 20.0)])
    # Equal graders at steps 20 and 30: the earliest wins, and the tie is noted.
    plant_run(root, ABLATION, "tie", 0, overrides={"optimizer_lr": 0.01},
              points=[validation_point(10, 1, 5.0, 55.0, 50.0), validation_point(20, 2, 12.5, 60.0, 47.5),
                      validation_point(30, 3, 12.5, 61.0, 48.5)])
    # A diverged run: NaN points are skipped and counted.
    plant_run(root, ABLATION, "nan", 0, overrides={"optimizer_lr": 1.0}, state="diverged",
              points=[validation_point(10, 1, 3.0, 52.0, 49.0), validation_point(20, 2, math.nan, math.nan, math.nan)])
    # A run that failed before its first validation.
    plant_run(root, ABLATION, "never", 0, overrides={"optimizer_lr": 0.001}, state="failed",
              points=[training_point(10, 1)])
    return root


def test_best_point_is_the_highest_grader_not_the_highest_iou(runs_root):
    row = _row(LocalStore(runs_root).load(), "peak")
    assert (row["grader"], row["iou"], row["si_logrmse"], row["step"], row["epoch"]) == (25.0, 70.0, 20.0, 30, 3)
    assert row["params"] == 22_000_000 and row["gflops"] == 7.5
    assert row["note"] == ""


def test_grader_tie_goes_to_the_earliest_step_and_is_noted(runs_root):
    row = _row(LocalStore(runs_root).load(), "tie")
    assert (row["step"], row["iou"]) == (20, 60.0)
    assert row["note"] == "grader tie at steps 20, 30: earliest kept"


def test_nan_points_are_skipped_and_counted(runs_root):
    tables = LocalStore(runs_root).load()
    row = _row(tables, "nan")
    assert (row["grader"], row["step"], row["state"]) == (3.0, 10, "diverged")
    assert row["note"] == "1 validation point(s) with non-finite grader skipped"
    nan_points = tables.points[tables.points["variant"] == "nan"]
    assert len(nan_points) == 2 and math.isnan(nan_points["grader"].iloc[1])  # kept for the curves, as NaN


def test_run_that_never_validated_has_a_row_with_nan_metrics_and_a_note(runs_root):
    tables = LocalStore(runs_root).load()
    row = _row(tables, "never")
    assert all(math.isnan(row[c]) for c in ("grader", "iou", "si_logrmse", "step", "epoch"))
    assert row["note"] == "never validated (state failed)"
    assert tables.points[tables.points["variant"] == "never"].empty


def test_all_nan_run_is_noted_as_such():
    best, note = best_with_note([validation_point(10, 1, math.nan, 50.0, 40.0)], "diverged")
    assert best is None and note == "no finite grader in 1 validation point(s)"


def test_runs_frame_has_identity_config_and_points_columns(runs_root):
    tables = LocalStore(runs_root).load()
    assert list(tables.runs.columns[:14]) == ["ablation", "run", "variant", "seed", "state", "grader", "iou",
                                              "si_logrmse", "step", "epoch", "params", "gflops", "note", "source"]
    assert {"optimizer_lr", "batch_size", "aspp_rates"} <= set(tables.runs.columns)
    assert set(tables.runs["ablation"]) == {ABLATION}
    assert list(tables.points.columns[:6]) == ["ablation", "run", "variant", "seed", "step", "epoch"]
    assert list(tables.points.columns[6:9]) == ["grader", "iou", "si_logrmse"]
    assert len(tables.points) == 3 + 3 + 2  # validation points only


def test_local_store_reads_what_read_run_reads(runs_root):
    for run_dir in sorted(p.parent for p in runs_root.rglob("config.yaml")):
        record = read_run(run_dir)
        run = local_run_input(run_dir)
        assert run.config == record.config
        assert json.dumps(run.points) == json.dumps(record.validation_points)  # NaN compares equal as text
        assert run.state == record.state


def test_torn_last_line_is_ignored_and_a_bad_middle_line_is_an_error(tmp_path):
    run_dir = plant_run(tmp_path, ABLATION, "torn", 0, points=[validation_point(10, 1, 4.0, 54.0, 50.0)])
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 20, "epoch": 2, "val/grader": 9')  # killed mid-write
    assert _row(LocalStore(tmp_path).load(), "torn")["grader"] == 4.0
    lines = (run_dir / "metrics.jsonl").read_text().split("\n")
    (run_dir / "metrics.jsonl").write_text('{"val/grader": oops}\n' + "\n".join(lines))
    with pytest.raises(StoreError, match=r"metrics.jsonl: line 1 is not valid JSON"):
        LocalStore(tmp_path).load()


def test_filter_by_ablation_and_missing_root(runs_root, tmp_path):
    plant_run(runs_root, "problem1.optimizer", "sgd", 0, points=[validation_point(10, 1, 1.0, 51.0, 50.0)])
    assert set(LocalStore(runs_root).load(["problem1.optimizer"]).runs["variant"]) == {"sgd"}
    with pytest.raises(StoreError, match="does not exist"):
        LocalStore(tmp_path / "nowhere").load()


# ---------------------------------------------------------------------------------------------- W&B
class FakeWandbRun:
    """The attributes of wandb.apis.public.Run that WandbStore reads, filled the way mtl.tracking logs:
    each metrics.jsonl point without step/time, plus trainer/step."""

    def __init__(self, run_dir, entity="team", project="mtl"):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        status = json.loads((run_dir / "status.json").read_text())
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        self.name, self.id = run_dir.name, run_dir.name[-8:]
        self.group, self.job_type = config["wandb_group"], config["wandb_job_type"]
        self.state = {"finished": "finished", "failed": "crashed", "diverged": "crashed"}[status["state"]]
        self.config = {**config, "_wandb": {"cli_version": "0.0"}}
        self.path = [entity, project, self.id]
        self._history = []
        for step, point in enumerate(lines):
            row = {k: v for k, v in point.items() if k not in ("step", "time")}
            self._history.append({**row, "trainer/step": point["step"], "_step": step})
        self.summary = {}
        for row in self._history:
            self.summary.update(row)
        self.summary["val/depth_histogram_m"] = {"_type": "histogram", "bins": [0, 1], "values": [1]}
        if status.get("model"):
            self.summary.update({"model/params": status["model"]["params"], "model/gflops": status["model"]["gflops"]})

    def scan_history(self, keys=None, page_size=1000):
        assert isinstance(keys, list) and "val/depth_histogram_m" not in keys  # logged in another call
        for row in self._history:
            if all(k in row for k in keys):  # like the API: only rows holding every requested key
                yield {**{k: row[k] for k in keys}, "_step": row["_step"]}


class FakeWandbApi:
    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        groups = filters["group"]["$in"] if filters else None
        return [r for r in self._runs if groups is None or r.group in groups]


def test_wandb_store_builds_the_same_tables_as_the_local_store(runs_root):
    # The W&B mirror reports the states in its own words (crashed); the local names are kept for "failed".
    fake_runs = [FakeWandbRun(p.parent) for p in sorted(runs_root.rglob("config.yaml"))]
    api = FakeWandbApi(fake_runs)
    from_wandb = WandbStore("team", "mtl", api=api).load([ABLATION])
    local = LocalStore(runs_root).load([ABLATION])
    assert api.calls == [("team/mtl", {"group": {"$in": [ABLATION]}})]
    assert list(from_wandb.runs["source"]) == [f"team/mtl/{r.id}" for r in sorted(fake_runs, key=lambda r: r.name)]
    local_runs = local.runs.drop(columns="source")
    wandb_runs = from_wandb.runs.drop(columns="source")
    local_runs.loc[local_runs["state"] == "diverged", "state"] = "failed"  # W&B: crashed -> failed
    pd.testing.assert_frame_equal(wandb_runs, local_runs)
    pd.testing.assert_frame_equal(from_wandb.points, local.points)


def test_wandb_store_without_credentials_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(StoreError, match="needs credentials"):
        WandbStore("team", "mtl").load()


# ---------------------------------------------------------------------------------------------- cache
def test_cached_summaries_give_the_same_tables_and_follow_changes(runs_root, tmp_path):
    cache = tmp_path / "cache"
    plain = LocalStore(runs_root).load()
    cold = LocalStore(runs_root, cache_dir=cache)
    first = cold.load()
    warm = LocalStore(runs_root, cache_dir=cache)
    second = warm.load()
    assert (cold.cache.hits, cold.cache.misses, warm.cache.hits, warm.cache.misses) == (0, 4, 4, 0)
    for tables in (first, second):
        pd.testing.assert_frame_equal(tables.runs, plain.runs)
        pd.testing.assert_frame_equal(tables.points, plain.points)

    # A new validation point of one run: that run is read again, the others come from the cache.
    peak = next(p.parent for p in runs_root.rglob("config.yaml") if p.parent.name.startswith("peak-"))
    with open(peak / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(validation_point(40, 4, 30.0, 71.0, 19.0)) + "\n")
    changed = LocalStore(runs_root, cache_dir=cache)
    assert _row(changed.load(), "peak")["grader"] == 30.0
    assert (changed.cache.hits, changed.cache.misses) == (3, 1)

    # A damaged cache file is not trusted: the run is read again.
    for path in cache.iterdir():
        path.write_bytes(b"{not json")
    damaged = LocalStore(runs_root, cache_dir=cache)
    pd.testing.assert_frame_equal(damaged.load().runs.drop(columns="source"),
                                  LocalStore(runs_root).load().runs.drop(columns="source"))
    assert damaged.cache.misses == 4
