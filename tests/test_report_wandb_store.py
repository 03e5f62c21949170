"""The W&B store against an in-memory stand-in of wandb's public API: the same tables as the local
store, resumed runs without duplicate steps, and a bounded number of requests (pages + one scan per run)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from planting import plant_reference_runs, plant_run, validation_point
from report.store import LocalStore, StoreError
from report.wandb_store import SCAN_WORKERS, WandbStore, last_point_per_step, representatives, without_rolled_back
from support import write_entry
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


def test_history_scans_stay_within_wandbs_own_ten_requests_at_once(tmp_path):
    for index in range(30):
        plant_run(tmp_path, ABLATION, f"v{index}", 0, points=[validation_point(10, 1, 1.0, 51.0, 50.0)])
    api = mirror(tmp_path, latency_s=0.02)
    tables = WandbStore("team", "mtl", api=api).load([ABLATION])
    assert len(tables.runs) == 30
    assert SCAN_WORKERS == 10 and 1 < api.most_in_flight <= 10


def test_points_rolled_back_by_a_resume_are_dropped(tmp_path):
    """An attempt logged steps 10-30 and was stopped with its checkpoint at step 10; the resume has logged step 20
    again and is still going. W&B holds step 30 from the stopped attempt; the run's summary says the run
    stands at step 20, and the local trace holds 10 and 20: so does the W&B row."""
    run_dir = plant_run(tmp_path, ABLATION, "resuming", 0, state="running",
                        points=[validation_point(10, 1, 5.0, 55.0, 50.0), validation_point(20, 2, 8.0, 58.0, 50.0)])
    stopped_attempt = [validation_point(10, 1, 5.0, 55.0, 50.0), validation_point(20, 2, 30.0, 80.0, 50.0),
                       validation_point(30, 3, 31.0, 81.0, 50.0)]
    api = FakeWandbApi([FakeWandbRun.from_run_dir(run_dir, earlier_points=stopped_attempt)])
    tables = WandbStore("team", "mtl", api=api).load()
    assert list(tables.points["step"]) == [10, 20] and tables.runs["grader"].iloc[0] == 8.0
    assert without_rolled_back([{"step": 30}, {"step": None}], None) == [{"step": 30}, {"step": None}]


# ------------------------------------------------------------------------------ the runs every reader sees
def plant_spec(spec, graders: list[float], state: str = "finished", wandb_run_id: str | None = None) -> Path:
    """A planned run's directory as the trainer leaves it (config without log_dir, status, trace, summary)."""
    from mtl.run.layout import RunDirectory
    from mtl.run.summary import write_run_summary

    run = RunDirectory(spec.run_dir)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    run.config_path.write_text(spec.config.to_yaml(exclude=("log_dir",)))
    points = [validation_point(10 * e, e, g, 50.0 + g / 2, 40.0 - e) for e, g in enumerate(graders, start=1)]
    run.metrics.write_text("".join(json.dumps(p) + "\n" for p in points))
    best = max(points, key=lambda p: p["val/grader"])
    status = {"state": state, "epoch": len(graders), "step": 10 * len(graders), "num_epochs": len(graders),
              "best": {"step": best["step"], "epoch": best["epoch"], "grader": best["val/grader"],
                       "iou": best["val/iou"], "si_logrmse": best["val/si_logrmse"]},
              "model": {"params": 100, "gflops": 1.5}, "wandb_run_id": wandb_run_id}
    run.status_path.write_text(json.dumps(status))
    if state == "finished":
        run.submission.write_bytes(b"planted")  # finished means packed too
    write_run_summary(run)
    return spec.run_dir


def wandb_copy(run_dir: Path, run_id: str, config: dict, continues: str, points: list | None = None) -> FakeWandbRun:
    """The W&B run of ``run_dir`` that another launcher started under its own id, carrying its history on."""
    own = FakeWandbRun.from_run_dir(run_dir)
    history = [{**{k: v for k, v in p.items() if k not in ("step", "time")}, "trainer/step": p["step"]}
               for p in points] if points is not None else [
        {k: v for k, v in row.items() if k != "_step"} for row in own._history]
    return FakeWandbRun(run_id=run_id, name=run_dir.name, group=config["wandb_group"],
                        job_type=config["wandb_job_type"], state=own.state, history=history,
                        config={**config, "log_dir": str(run_dir), "continues_run_id": continues},
                        model={"params": 100, "gflops": 1.5})


def test_wandb_report_selects_the_runs_the_local_report_selects(tmp_path, ablations):
    """Stale runs (another profile) out, another entry's run reused in, and the W&B runs of one run directory
    (its own, an agent's that carried it on) one row: the same tables as the local store's."""
    from mtl.ablate.entry import load_entries
    from mtl.ablate.planner import make_plan
    from mtl.config import RUN_INVARIANT_KEYS
    from mtl.run.layout import remember_profile
    from report.commands import plan_selections

    write_entry(ablations, "problem1.first", grid={"optimizer_lr": [0.01, 0.02]})
    write_entry(ablations, "problem1.second", grid={"optimizer_lr": [0.02, 0.03]})
    runs_dir = tmp_path / "runs"
    entries = load_entries(ablations)
    first = make_plan(entries["problem1.first"], "quick", runs_dir).runs
    dirs = [plant_spec(spec, [1.0 + i, 2.0 + i], wandb_run_id=f"first{i}") for i, spec in enumerate(first)]
    stale = plant_spec(make_plan(entries["problem1.second"], "full", runs_dir).runs[0], [50.0], wandb_run_id="stale")
    second = make_plan(entries["problem1.second"], "quick", runs_dir).runs
    assert second[0].reused_from is not None and second[0].run_dir == dirs[1]
    own = plant_spec(second[1], [4.0, 6.0], wandb_run_id="agent9")
    for folder in ("problem1.first", "problem1.second"):
        remember_profile(runs_dir / folder, "quick")

    runs = [FakeWandbRun.from_run_dir(d) for d in (*dirs, stale)]
    # second's own run: started by `run` (W&B run x9, stopped at step 10 after logging a better point at 20
    # that the resume rolled back), carried on by an agent's W&B run agent9.
    partial = [validation_point(10, 1, 4.0, 52.0, 39.0), validation_point(20, 2, 99.0, 99.0, 1.0)]
    runs.append(wandb_copy(own, "x9", second[1].config.model_dump(mode="json"), None, partial))
    runs.append(wandb_copy(own, "agent9", second[1].config.model_dump(mode="json"), "x9"))
    # The agent's run of the reused point: the finished run mirrored into it, in second's group.
    runs.append(wandb_copy(dirs[1], "agent8", second[0].config.model_dump(mode="json"), "first1"))
    api = FakeWandbApi(runs)

    selections = plan_selections(list(entries.values()), runs_dir, None)
    from_wandb = WandbStore("team", "mtl", api=api).load(selections=selections)
    local = LocalStore(runs_dir).load(selections=selections)
    drop = ["source", "url", *(k for k in RUN_INVARIANT_KEYS if k in local.runs)]
    pd.testing.assert_frame_equal(from_wandb.runs.drop(columns=drop), local.runs.drop(columns=drop))
    pd.testing.assert_frame_equal(from_wandb.points, local.points)
    rows = from_wandb.runs
    assert len(rows) == 4 and stale.name not in set(rows["run"])
    reused = rows[(rows["ablation"] == "problem1.second") & (rows["run"] == dirs[1].name)]
    assert reused["note"].iloc[0].startswith("same config as problem1.first/")
    assert reused["source"].iloc[0] == "team/mtl/agent8"  # the run that carried it on
    assert rows[rows["run"] == own.name]["source"].iloc[0] == "team/mtl/agent9"
    assert api.listings[0][1] == {"group": {"$in": ["problem1.first", "problem1.second"]}}


def test_without_their_link_the_run_that_got_furthest_stands_for_a_directory(tmp_path):
    run_dir = plant_run(tmp_path, ABLATION, "twice", 0, points=[validation_point(10, 1, 5.0, 55.0, 50.0),
                                                                validation_point(20, 2, 8.0, 58.0, 50.0)])
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    short = wandb_copy(run_dir, "short", config, None, [validation_point(10, 1, 5.0, 55.0, 50.0)])
    whole = wandb_copy(run_dir, "whole", config, None)
    for runs in ([short, whole], [whole, short]):
        chosen = representatives(list(FakeWandbApi(runs).runs("team/mtl", lazy=False)))
        assert [r.id for r in chosen.values()] == ["whole"]
