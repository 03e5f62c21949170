"""Single-task runs and Delta_m in the report, from planted runs (nothing trains): the formula against
Vandenhende et al.'s, how baselines are found, and what tables, write-up and ladder show."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from mtl.ablate.entry import EntryError, load_entries
from mtl.ablate.planner import plan
from mtl.run.layout import RunDirectory
from mtl.run.model import ValidationPoint
from mtl.run.records import read_record
from mtl.run.summary import write_run_summary
from mtl.suite import main
from report.multitask import delta_m
from report.store import LocalStore
from support import write_entry


def calculate_multi_task_performance(eval_dict, single_task_dict):
    """Vandenhende et al.'s evaluate_utils.calculate_multi_task_performance, for the two tasks here (a
    fraction; the report shows percent)."""
    performance = 0.0
    for task in eval_dict:
        mtl, stl = eval_dict[task], single_task_dict[task]
        if task == "depth":  # lower is better
            performance -= (mtl["rmse"] - stl["rmse"]) / stl["rmse"]
        else:  # mIoU: higher is better
            performance += (mtl["mIoU"] - stl["mIoU"]) / stl["mIoU"]
    return performance / len(eval_dict)


def test_delta_m_is_vandenhendes_multi_task_performance_in_percent():
    multi, single = {"iou": 20.0, "si_logrmse": 40.0}, {"iou": 16.0, "si_logrmse": 50.0}
    expected = calculate_multi_task_performance({"semseg": {"mIoU": 20.0}, "depth": {"rmse": 40.0}},
                                                {"semseg": {"mIoU": 16.0}, "depth": {"rmse": 50.0}})
    assert delta_m(multi, single) == pytest.approx(100 * expected)
    assert delta_m(multi, single) == pytest.approx(50 * (4 / 16 + 10 / 50))  # both tasks better: positive
    assert delta_m({"iou": 16.0, "si_logrmse": 50.0}, single) == 0.0


def plant(spec, points: list[dict]) -> None:
    """A finished run where the plan expects ``spec``, with these validation points; its best point by the
    run's own rule (a single-task run's by its task's metric)."""
    run = RunDirectory(spec.run_dir)
    spec.run_dir.mkdir(parents=True)
    run.config_path.write_text(spec.config.to_yaml())
    run.metrics.write_text("".join(json.dumps(p) + "\n" for p in points))
    key, better = (("val/iou", max) if spec.config.tasks == "semseg" else ("val/si_logrmse", min)
                   if spec.config.tasks == "depth" else ("val/grader", max))
    best = better(points, key=lambda p: p[key])
    status = {"state": "finished", "epoch": points[-1]["epoch"], "num_epochs": points[-1]["epoch"],
              "step": points[-1]["step"], "best": ValidationPoint.of(best).model_dump()}
    run.status_path.write_text(json.dumps(status))
    write_run_summary(run)


def both(iou: float, si: float, step: int = 10) -> dict:
    return {"step": step, "epoch": step // 10, "val/grader": max(iou - 50, 0) + max(50 - si, 0), "val/iou": iou,
            "val/si_logrmse": si, "val/loss": 2.0}


def semseg_only(iou: float, step: int = 10) -> dict:
    return {"step": step, "epoch": step // 10, "val/grader": None, "val/iou": iou, "val/loss": 1.0}


def depth_only(si: float, step: int = 10) -> dict:
    return {"step": step, "epoch": step // 10, "val/grader": None, "val/si_logrmse": si, "val/loss": 1.0}


# (IoU, SI-logRMSE) of the multi-task runs and each single-task run's metric, by seed.
JOINT = {0: (20.0, 40.0), 1: (22.0, 42.0)}
SEMSEG = {0: 16.0, 1: 20.0}
DEPTH = {0: 50.0, 1: 40.0}


@pytest.fixture
def planted(ablations, tmp_path):
    """problem1.st: a joint multi-task model and its two single-task runs, seeds 0 and 1, its own baselines;
    problem1.lw: other weightings of the same model (one with another learning rate), baselines problem1.st."""
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.st", item="1.1e", seeds=[0, 1], single_task_baselines="problem1.st", variants=[
        {"name": "joint", "overrides": {}}, {"name": "joint-semseg", "overrides": {"tasks": "semseg"}},
        {"name": "joint-depth", "overrides": {"tasks": "depth"}}])
    write_entry(ablations, "problem1.lw", item="1.1d", seeds=[0, 1], single_task_baselines="problem1.st", variants=[
        {"name": "heavy", "overrides": {"loss_weight_semseg": 0.75, "loss_weight_depth": 0.25}},
        {"name": "uncertainty", "overrides": {"loss_weighting": "uncertainty"}},
        {"name": "fast", "overrides": {"optimizer_lr": 0.1}}])
    entries = load_entries(ablations)
    for spec in plan(entries["problem1.st"], None, runs_dir):
        seed = spec.seed
        if spec.variant == "joint":
            plant(spec, [both(*JOINT[seed])])
        elif spec.variant == "joint-semseg":  # its better point is the later one
            plant(spec, [semseg_only(SEMSEG[seed] - 5, 10), semseg_only(SEMSEG[seed], 20)])
        else:  # lower is better: the later point
            plant(spec, [depth_only(DEPTH[seed] + 5, 10), depth_only(DEPTH[seed], 20)])
    for spec in plan(entries["problem1.lw"], None, runs_dir):
        plant(spec, [both(24.0, 40.0 + spec.seed)])
    return ablations, runs_dir


def by_hand(multi: tuple[float, float], seed: int) -> float:
    iou, si = multi
    return 100 * ((iou - SEMSEG[seed]) / SEMSEG[seed] - (si - DEPTH[seed]) / DEPTH[seed]) / 2


def report(ablations, runs_dir, out, *ids: str, ladder: bool = False) -> int:
    return main(["report", *ids, "--runs-dir", str(runs_dir), "--ablations-dir", str(ablations), "--out", str(out),
                 "--no-figures", "--no-cache", *(["--ladder"] if ladder else [])])


def test_single_task_runs_are_shown_at_their_own_best_point_with_no_grader(planted, tmp_path):
    ablations, runs_dir = planted
    runs = LocalStore(runs_dir).load(["problem1.st"]).runs
    depth = runs[(runs["variant"] == "joint-depth") & (runs["seed"] == 0)].iloc[0]
    assert (depth["step"], depth["si_logrmse"]) == (20, DEPTH[0]) and math.isnan(depth["grader"])
    assert math.isnan(depth["iou"])
    assert "single-task run (tasks=depth): the grader is not defined; best point by SI-logRMSE" in depth["note"]
    semseg = runs[(runs["variant"] == "joint-semseg") & (runs["seed"] == 1)].iloc[0]
    assert (semseg["step"], semseg["iou"]) == (20, SEMSEG[1])
    # The records agree although no grader is defined: the status's best point is found in the trace.
    assert read_record(semseg["source"]).status.best.step == 20


def test_delta_m_of_the_multi_task_runs_with_seed_noise_in_tables_and_write_up(planted, tmp_path):
    ablations, runs_dir = planted
    out = tmp_path / "reports"
    assert report(ablations, runs_dir, out, "problem1.st") == 0
    runs = pd.read_csv(out / "tables" / "problem1.st.runs.csv")
    joint = runs[runs["variant"] == "joint"].set_index("seed")
    assert joint.loc[0, "delta_m"] == pytest.approx(by_hand(JOINT[0], 0))  # +22.5
    assert joint.loc[1, "delta_m"] == pytest.approx(by_hand(JOINT[1], 1))  # +2.5
    assert runs[runs["variant"] != "joint"]["delta_m"].isna().all()  # the baselines themselves have none
    assert list(runs.columns[runs.columns.get_loc("grader"):][:2]) == ["grader", "delta_m"]  # beside the grader
    variants = pd.read_csv(out / "tables" / "problem1.st.variants.csv").set_index("variant")
    assert variants.loc["joint", "delta_m"] == pytest.approx(12.5)
    assert variants.loc["joint", "delta_m_std"] == pytest.approx(math.sqrt(200))  # (22.5 - 2.5) / sqrt(2)
    assert variants.loc["joint", "winner"] == "by rule only"  # the one variant with a grader
    text = (out / "report.md").read_text()
    assert "Δm over the single-task baselines of problem1.st (mean ± standard deviation over seeds): joint " \
           "+12.50 % ± 14.14 (2 seeds)." in text
    assert "Single-task variants (joint-semseg, joint-depth): the grader is not defined" in text
    header, _, joint_row = (out / "tables" / "problem1.st.variants.md").read_text().splitlines()[:3]
    assert "|   grader std |   Δm (%) |   Δm std |" in header and "|   +12.50 |    14.14 |" in joint_row


def test_baselines_of_another_entry_match_every_key_but_how_tasks_are_combined(planted, tmp_path):
    ablations, runs_dir = planted
    out = tmp_path / "reports"
    assert report(ablations, runs_dir, out, "problem1.lw") == 0
    runs = pd.read_csv(out / "tables" / "problem1.lw.runs.csv").set_index("run")
    heavy = runs[runs["variant"] == "heavy"].set_index("seed")["delta_m"]
    uncertainty = runs[runs["variant"] == "uncertainty"].set_index("seed")["delta_m"]
    for seed in (0, 1):  # other loss weights, another weighting method: the same baselines
        assert heavy[seed] == pytest.approx(by_hand((24.0, 40.0 + seed), seed))
        assert uncertainty[seed] == pytest.approx(heavy[seed])
    assert runs[runs["variant"] == "fast"]["delta_m"].isna().all()  # another learning rate: no baseline
    text = (out / "report.md").read_text()
    fast = [r for r in runs.index if r.startswith("fast-s0")][0]
    assert f"Δm not computed for {fast}: semseg: no finished run of seed 0 with tasks=semseg and the same " \
           "config; depth: no finished run of seed 0 with tasks=depth and the same config." in text
    assert report(ablations, runs_dir, out, "problem1.lw", ladder=True) == 0
    ladder = pd.read_csv(out / "ladder.problem1.lw.csv")
    winner = ladder.iloc[0]["winner"]
    assert ladder.iloc[0]["Δm (%)"] == pytest.approx(sum(by_hand((24.0, 40.0 + s), s) for s in (0, 1)) / 2)
    assert winner in ("heavy", "uncertainty") and not math.isnan(ladder.iloc[0]["Δm std"])


def test_ambiguous_or_missing_baseline_runs_are_named_not_guessed(planted, tmp_path):
    ablations, runs_dir = planted
    # A second single-task depth run that matches too (another loss weight): no baseline is picked.
    write_entry(ablations, "problem1.st", item="1.1e", seeds=[0, 1], single_task_baselines="problem1.st", variants=[
        {"name": "joint", "overrides": {}}, {"name": "joint-semseg", "overrides": {"tasks": "semseg"}},
        {"name": "joint-depth", "overrides": {"tasks": "depth"}},
        {"name": "depth-heavy", "overrides": {"tasks": "depth", "loss_weight_depth": 1.0}}])
    for spec in plan(load_entries(ablations)["problem1.st"], None, runs_dir):
        if spec.variant == "depth-heavy" and spec.seed == 0:
            plant(spec, [depth_only(30.0)])
    out = tmp_path / "reports"
    assert report(ablations, runs_dir, out, "problem1.st") == 0
    runs = pd.read_csv(out / "tables" / "problem1.st.runs.csv").set_index(["variant", "seed"])
    assert math.isnan(runs.loc[("joint", 0), "delta_m"])
    assert runs.loc[("joint", 1), "delta_m"] == pytest.approx(by_hand(JOINT[1], 1))
    text = (out / "report.md").read_text()
    assert "depth: 2 runs match (depth-heavy-s0-" in text and ", joint-depth-s0-" in text
    assert "so none is the baseline" in text


def test_an_unknown_baselines_entry_is_refused_before_anything_runs(ablations):
    write_entry(ablations, "problem1.lw", single_task_baselines="problem1.singel_task")
    write_entry(ablations, "problem1.single_task")
    with pytest.raises(EntryError, match=r"key 'single_task_baselines': unknown entry 'problem1.singel_task'.*"
                                         r"did you mean 'problem1.single_task'"):
        load_entries(ablations)


def test_an_entry_of_single_task_runs_must_rank_by_its_task_metric(ablations, tmp_path):
    write_entry(ablations, "problem1.st", grid={"tasks": ["semseg"], "optimizer_lr": [0.01, 0.1]})
    with pytest.raises(EntryError, match=r"rank_by.metric.*trains one task.*val/iou"):
        plan(load_entries(ablations)["problem1.st"], None, tmp_path)
    write_entry(ablations, "problem1.st", grid={"tasks": ["semseg"], "optimizer_lr": [0.01, 0.1]},
                rank_by={"metric": "val/iou"})
    assert len(plan(load_entries(ablations)["problem1.st"], None, tmp_path)) == 2


def test_without_runs_of_the_baselines_entry_the_report_says_so(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.st", variants=[{"name": "semseg", "overrides": {"tasks": "semseg"}}],
                rank_by={"metric": "val/iou"})
    write_entry(ablations, "problem1.lw", single_task_baselines="problem1.st")
    for spec in plan(load_entries(ablations)["problem1.lw"], None, runs_dir):
        plant(spec, [both(24.0, 40.0)])
    out = tmp_path / "reports"
    assert report(ablations, runs_dir, out, "problem1.lw") == 0
    assert "Δm not computed: no runs of problem1.st, whose single-task runs are the baselines, were read" in \
        (out / "report.md").read_text()
