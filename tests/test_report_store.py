"""Result stores: best-grader point per run and notes for odd runs (the W&B store: test_report_wandb_store.py)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from mtl.run.layout import SUMMARY_FILE
from mtl.run.records import read_record
from mtl.run.summary import read_run_summary
from planting import plant_reference_runs, plant_run, validation_point
from report.store import LocalStore, StoreError, best_with_note, local_run_input

ABLATION = "problem1.lr"


def _row(tables, variant):
    rows = tables.runs[tables.runs["variant"] == variant]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.fixture()
def runs_root(tmp_path):
    return plant_reference_runs(tmp_path / "runs", ABLATION)


def test_best_point_is_the_highest_grader_not_the_highest_iou(runs_root):
    row = _row(LocalStore(runs_root).load(), "peak")
    assert (row["grader"], row["iou"], row["si_logrmse"], row["step"], row["epoch"]) == (25.0, 70.0, 20.0, 30, 3)
    assert row["params"] == 22_000_000 and row["gflops"] == 7.5
    assert row["note"] == ""


def test_grader_tie_goes_to_the_earliest_step_and_is_noted(runs_root):
    row = _row(LocalStore(runs_root).load(), "tie")
    assert (row["step"], row["iou"]) == (20, 60.0)
    # Equal IoU - SI-logRMSE too (60 - 47.5 = 61 - 48.5): the earlier step decides.
    assert row["note"] == "grader tie at steps 20, 30: step 20 kept by the earlier step"


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
        record = read_record(run_dir)
        run = local_run_input(run_dir)
        assert run.config == record.config
        assert json.dumps(run.points) == json.dumps(record.points)  # NaN compares equal as text
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


# ---------------------------------------------------------------------------------------------- cache
def test_cached_summaries_give_the_same_tables_and_follow_changes(runs_root, tmp_path):
    for summary_file in runs_root.rglob(SUMMARY_FILE):  # the cache holds runs read from their traces
        summary_file.unlink()
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


# ------------------------------------------------------------------------------------ summary files
def test_tables_from_summary_files_equal_tables_from_traces(runs_root):
    from_summaries = LocalStore(runs_root).load()
    for summary_file in runs_root.rglob(SUMMARY_FILE):
        summary_file.unlink()
    from_traces = LocalStore(runs_root).load()
    pd.testing.assert_frame_equal(from_summaries.runs, from_traces.runs)
    pd.testing.assert_frame_equal(from_summaries.points, from_traces.points)
    pd.testing.assert_frame_equal(from_summaries.for_ablation(ABLATION).points, from_traces.points)


def test_runs_table_does_not_read_traces_and_points_do(runs_root):
    peak = next(p.parent for p in runs_root.rglob("config.yaml") if p.parent.name.startswith("peak-"))
    trace = peak / "metrics.jsonl"
    text = trace.read_text()
    damaged = text.replace('"val/iou": 60.0', '"val/iou": 6!.0', 1)  # same size: the summary still counts as current
    assert len(damaged) == len(text) and damaged != text
    trace.write_text(damaged)
    tables = LocalStore(runs_root).load()
    assert _row(tables, "peak")["grader"] == 25.0
    with pytest.raises(StoreError, match=r"metrics.jsonl: line 2 is not valid JSON"):
        tables.points  # noqa: B018 (the property reads the traces)


def test_summary_written_by_planting_holds_the_best_and_final_points(runs_root):
    peak = next(p.parent for p in runs_root.rglob("config.yaml") if p.parent.name.startswith("peak-"))
    summary = read_run_summary(peak)
    record = read_record(peak)
    assert summary.best == record.best() and summary.best["step"] == 30
    assert summary.final == record.points[-1]
    assert summary.model.params == 22_000_000 and summary.model.gflops == 7.5 and summary.state == "finished"


def test_stale_summary_gives_way_to_the_trace(runs_root):
    peak = next(p.parent for p in runs_root.rglob("config.yaml") if p.parent.name.startswith("peak-"))
    with open(peak / "metrics.jsonl", "a") as handle:  # a point logged after the summary was written
        handle.write(json.dumps(validation_point(40, 4, 30.0, 71.0, 19.0)) + "\n")
    assert read_run_summary(peak) is None
    assert _row(LocalStore(runs_root).load(), "peak")["grader"] == 30.0


def test_edited_config_makes_the_summary_stale(runs_root):
    peak = next(p.parent for p in runs_root.rglob("config.yaml") if p.parent.name.startswith("peak-"))
    config = peak / "config.yaml"
    config.write_text(config.read_text().replace("wandb_job_type: peak", "wandb_job_type: renamed"))
    assert read_run_summary(peak) is None
    assert set(LocalStore(runs_root).load().runs["variant"]) == {"renamed", "tie", "nan", "never"}


def test_damaged_summary_is_an_error_naming_the_file(runs_root):
    peak = next(p.parent for p in runs_root.rglob("config.yaml") if p.parent.name.startswith("peak-"))
    (peak / SUMMARY_FILE).write_text("{not json")
    with pytest.raises(StoreError, match=r"summary.json: not valid JSON"):
        LocalStore(runs_root).load()
