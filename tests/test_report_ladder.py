"""`report ENTRY --ladder`: the chain of bases, one row per entry, from planted runs (nothing trains)."""

from __future__ import annotations

import pandas as pd
import pytest

from mtl.ablate.entry import load_entries
from mtl.ablate.planner import plan
from mtl.run.layout import RunDirectory
from mtl.run.status import StatusWriter
from mtl.suite import main
from planting import plant_planned
from support import write_entry


@pytest.fixture
def chain(ablations, tmp_path):
    """problem1.a (two variants) -> problem1.b (winner of a, two variants) -> problem1.c (variant 'slow' of b
    prescribed, three seeds)."""
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", item="1.1a", variants=[
        {"name": "sgd", "overrides": {"optimizer": "sgd"}}, {"name": "adam", "overrides": {"optimizer": "adam"}}])
    write_entry(ablations, "problem1.b", item="1.1b", base="best of problem1.a", variants=[
        {"name": "fast", "overrides": {"optimizer_lr": 0.1}}, {"name": "slow", "overrides": {"optimizer_lr": 0.001}}])
    write_entry(ablations, "problem1.c", item="1.2", base="problem1.b variant slow", seeds=[0, 1, 2],
                grid={"aspp": [False, True]})
    entries = load_entries(ablations)
    sgd, adam = plan(entries["problem1.a"], None, runs_dir)
    plant_planned(sgd, [5.0, 10.0])
    plant_planned(adam, [8.0, 12.0])
    fast, slow = plan(entries["problem1.b"], None, runs_dir)
    plant_planned(fast, [20.0])
    plant_planned(slow, [19.5])  # behind the winner by less than two seed deviations (pooled below: 1.0)
    for spec in plan(entries["problem1.c"], None, runs_dir):
        base = 30.0 if spec.config.aspp else 18.0
        plant_planned(spec, [base + spec.config.seed - 1.0])  # seeds 0, 1, 2: mean base, sd 1.0
    return ablations, runs_dir


def test_ladder_rows_follow_the_chain_with_winners_gains_and_noise(chain, tmp_path, capsys):
    ablations, runs_dir = chain
    out = tmp_path / "reports"
    code = main(["report", "problem1.c", "--ladder", "--runs-dir", str(runs_dir), "--ablations-dir", str(ablations),
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    frame = pd.read_csv(out / "ladder.problem1.c.csv").fillna({"note": "", "winner": ""})
    assert frame["entry"].tolist() == ["problem1.a", "problem1.b", "problem1.c"]
    assert frame["builds on"].tolist() == ["profile quick", "winner of problem1.a",
                                           "prescribed variant slow of problem1.b"]
    assert frame["winner"].tolist() == ["adam", "fast", "aspp=true"]
    assert frame["grader"].tolist() == [12.0, 20.0, 30.0]
    assert frame["runs"].tolist() == [2, 2, 6]
    assert frame["Δ grader"].tolist()[1:] == [8.0, 10.0]
    assert frame["margin"].tolist() == [2.0, 0.5, 12.0]
    assert frame["grader std"].iloc[2] == pytest.approx(1.0)
    notes = frame["note"].tolist()
    assert "margin under 2 seed sd (2.00)" in notes[1]
    assert "seed sd" not in notes[0] and "seed sd" not in notes[2]
    assert "Seed noise: grader standard deviation 1.00" in printed
    assert "| problem1.b" in printed and (out / "ladder.problem1.c.md").read_text() in printed
    # No step names single-task baselines: the Markdown leaves out the empty Δm columns and says why.
    assert "Δm" not in printed.split("Seed noise")[0] and "Δm: none, as no step has single-task baselines" in printed
    assert frame["Δm (%)"].isna().all()  # the CSV keeps its columns


def test_ladder_names_a_step_without_runs(chain, tmp_path):
    ablations, runs_dir = chain
    write_entry(ablations, "problem1.d", item="1.3", base="best of problem1.c", grid={"decoder_skip": [False, True]})
    out = tmp_path / "reports"
    assert main(["report", "problem1.d", "--ladder", "--runs-dir", str(runs_dir), "--ablations-dir",
                 str(ablations), "--out", str(out)]) == 0
    frame = pd.read_csv(out / "ladder.problem1.d.csv").fillna({"note": "", "winner": ""})
    assert frame["entry"].tolist()[-1] == "problem1.d"
    assert frame["note"].tolist()[-1] == "no runs recorded"
    assert frame["winner"].tolist()[-1] == ""


def test_ladder_names_the_profile_the_runs_trained_with_over_the_declared_one(ablations, tmp_path):
    """An entry based on the full profile whose runs trained under --profile quick builds on quick here."""
    runs_dir, out = tmp_path / "runs", tmp_path / "reports"
    write_entry(ablations, "problem1.a", base="full", grid={"aspp": [False, True]})
    for spec in plan(load_entries(ablations)["problem1.a"], "quick", runs_dir):
        plant_planned(spec, [12.0 if spec.config.aspp else 10.0])
    where = ["--runs-dir", str(runs_dir), "--ablations-dir", str(ablations), "--out", str(out)]
    assert main(["report", "problem1.a", "--ladder", "--profile", "quick", *where]) == 0
    frame = pd.read_csv(out / "ladder.problem1.a.csv")
    assert frame["builds on"].tolist() == ["profile quick (declared: full)"]
    assert frame["winner"].tolist() == ["aspp=true"]


def test_ladder_takes_one_entry(chain, capsys):
    ablations, runs_dir = chain
    assert main(["report", "problem1.a", "problem1.b", "--ladder", "--runs-dir", str(runs_dir),
                 "--ablations-dir", str(ablations)]) == 2
    assert "--ladder takes one entry" in capsys.readouterr().err


def test_ladder_says_what_stood_in_for_a_prescribed_variant_that_could_not_run(ablations, tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "reports"
    write_entry(ablations, "problem1.a", item="1.1", grid={"pretrained": [False, True]})
    write_entry(ablations, "problem1.b", item="1.2", base="problem1.a variant pretrained=true",
                grid={"aspp": [False, True]})
    entries = load_entries(ablations)
    scratch, pretrained = plan(entries["problem1.a"], None, runs_dir)
    plant_planned(scratch, [10.0])
    pretrained.run_dir.mkdir(parents=True)
    (pretrained.run_dir / "config.yaml").write_text(pretrained.config.to_yaml())
    StatusWriter(RunDirectory(pretrained.run_dir)).skipped(error="PretrainedWeightsUnavailable: offline")
    for spec in plan(entries["problem1.b"], None, runs_dir):
        if spec.reused_from is None:
            plant_planned(spec, [12.0 if spec.config.aspp else 10.0])
    assert main(["report", "problem1.b", "--ladder", "--runs-dir", str(runs_dir), "--ablations-dir", str(ablations),
                 "--out", str(out)]) == 0
    frame = pd.read_csv(out / "ladder.problem1.b.csv", dtype={"note": str}).fillna({"note": ""})
    assert frame["note"].tolist()[0] == "skipped here: pretrained=true"
    assert frame["builds on"].tolist()[1] == (
        "prescribed variant pretrained=true of problem1.a; here: variant 'pretrained=true' was skipped on this "
        "machine (PretrainedWeightsUnavailable), so the winner among the variants that ran, "
        "'pretrained=false' (the only variant scored), stands in for it")
    assert frame["winner"].tolist() == ["pretrained=false", "aspp=true"]
