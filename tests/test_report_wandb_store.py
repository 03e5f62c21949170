"""The W&B store against an in-memory stand-in of wandb's public API: the same tables as the local
store, resumed runs without duplicate steps, and a bounded number of requests (pages + one scan per run)."""

from __future__ import annotations

import pandas as pd
import pytest

from planting import plant_reference_runs, plant_run, validation_point
from report.store import LocalStore, StoreError
from report.wandb_store import WandbStore, last_point_per_step
from wandb_fake import FakeWandbApi, FakeWandbRun

ABLATION = "problem1.lr"


@pytest.fixture()
def runs_root(tmp_path):
    return plant_reference_runs(tmp_path / "runs", ABLATION)


def mirror(root, **api_options):
    return FakeWandbApi([FakeWandbRun.from_run_dir(p.parent) for p in sorted(root.rglob("config.yaml"))], **api_options)


def assert_same_tables(from_wandb, local):
    # The W&B mirror reports the states in its own words (crashed); the local names are kept for "failed".
    local_runs = local.runs.drop(columns=["source", "url"])
    local_runs.loc[local_runs["state"] == "diverged", "state"] = "failed"
    pd.testing.assert_frame_equal(from_wandb.runs.drop(columns=["source", "url"]), local_runs)
    pd.testing.assert_frame_equal(from_wandb.points, local.points)


def test_wandb_store_builds_the_same_tables_as_the_local_store(runs_root):
    api = mirror(runs_root)
    from_wandb = WandbStore("team", "mtl", api=api).load([ABLATION])
    assert_same_tables(from_wandb, LocalStore(runs_root).load([ABLATION]))
    ordered = sorted(api._runs, key=lambda r: r.name)
    assert list(from_wandb.runs["source"]) == [f"team/mtl/{r.id}" for r in ordered]
    assert list(from_wandb.runs["url"]) == [f"https://wandb.example/team/mtl/runs/{r.id}" for r in ordered]


def test_listing_is_eager_in_large_pages_and_each_run_is_scanned_once(runs_root):
    for ablation, variant in [("problem1.optimizer", "sgd"), ("problem1.optimizer", "adam"), ("problem1.skip", "on")]:
        plant_run(runs_root, ablation, variant, 0, points=[validation_point(10, 1, 1.0, 51.0, 50.0)])
    api = mirror(runs_root)
    tables = WandbStore("team", "mtl", api=api, page_size=2).load([ABLATION, "problem1.optimizer"])
    assert len(tables.runs) == 6
    assert api.listings == [("team/mtl", {"group": {"$in": [ABLATION, "problem1.optimizer"]}}, 2, False)]
    # 6 runs in pages of 2 = 3 listing requests, then one history scan per run that ever validated (5):
    # the run that never validated has no val/ summary and needs no scan. No run is reloaded.
    assert api.requests == 3 + 5

    lazy_api = mirror(runs_root)
    first = next(iter(lazy_api.runs("team/mtl", filters={"group": {"$in": [ABLATION]}})))
    assert first.config["optimizer_lr"] in (0.1, 0.01, 1.0, 0.001)
    assert lazy_api.requests == 1 + 1  # what a lazy listing costs: its page, then a reload to read the config


def test_resumed_run_keeps_the_last_point_of_each_step(tmp_path):
    # W&B received steps 10-30 before the run was killed; the trace was truncated to the checkpoint at
    # step 10, and steps 20 and 30 were trained and logged again (with other values).
    run_dir = plant_run(tmp_path, ABLATION, "resumed", 0,
                        points=[validation_point(10, 1, 5.0, 55.0, 50.0), validation_point(20, 2, 8.0, 58.0, 50.0),
                                validation_point(30, 3, 9.0, 59.0, 50.0)])
    before_kill = [validation_point(10, 1, 5.0, 55.0, 50.0), validation_point(20, 2, 30.0, 80.0, 50.0),
                   validation_point(30, 3, 31.0, 81.0, 50.0)]
    api = FakeWandbApi([FakeWandbRun.from_run_dir(run_dir, earlier_points=before_kill)])
    from_wandb = WandbStore("team", "mtl", api=api).load()
    assert list(from_wandb.points["step"]) == [10, 20, 30]
    assert list(from_wandb.points["grader"]) == [5.0, 8.0, 9.0]
    assert from_wandb.runs["grader"].iloc[0] == 9.0  # not 31 from the lost attempt
    assert_same_tables(from_wandb, LocalStore(tmp_path).load())


def test_last_point_per_step_orders_by_step():
    rows = [{"trainer/step": 30, "val/grader": 1.0}, {"trainer/step": 10, "val/grader": 2.0},
            {"trainer/step": 30, "val/grader": 3.0}]
    assert last_point_per_step(rows, ["val/grader"]) == [{"val/grader": 2.0, "step": 10, "epoch": None},
                                                         {"val/grader": 3.0, "step": 30, "epoch": None}]


def test_a_failing_scan_names_the_run(runs_root):
    api = mirror(runs_root)
    broken = next(r for r in api._runs if r.name.startswith("peak-"))

    def unreachable(*args, **kwargs):
        raise ConnectionError("server closed the connection")

    broken.scan_history = unreachable
    with pytest.raises(StoreError, match=rf"cannot read W&B run team/mtl/{broken.id}: server closed the connection"):
        WandbStore("team", "mtl", api=api, workers=2).load()


def test_bad_pool_settings_are_refused():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        WandbStore("team", "mtl", api=FakeWandbApi(), workers=0)


def test_no_runs_give_empty_tables():
    tables = WandbStore("team", "mtl", api=FakeWandbApi()).load(["problem1.lr"])
    assert tables.runs.empty and tables.points.empty


def test_wandb_store_without_credentials_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    with pytest.raises(StoreError, match="needs credentials"):
        WandbStore("team", "mtl").load()
