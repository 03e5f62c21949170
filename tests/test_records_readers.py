"""One validating reader of a run's records: report, planner, status and the results table name a
damaged line or file the same way, and never let it change a winner (planted runs, nothing trains)."""

from __future__ import annotations

import pytest

from mtl.ablate.entry import EntryError, load_entries
from mtl.ablate.planner import make_plan, plan
from mtl.run.records import RecordError, read_record
from mtl.suite import main
from planting import plant_planned as plant
from support import write_entry


@pytest.fixture
def planted(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", variants=[{"name": "low", "overrides": {"optimizer_lr": 0.05}},
                                                   {"name": "high", "overrides": {"optimizer_lr": 0.002}}])
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    entries = load_entries(ablations)
    low, high = plan(entries["problem1.a"], None, runs_dir)
    plant(low, [10.0, 20.0])
    plant(high, [15.0, 40.0])
    assert make_plan(entries["problem1.b"], None, runs_dir).base.winner.variant == "high"
    return entries, runs_dir, high


def damage_best_line(run_dir) -> str:
    """Cut the best validation point (the last line but one is not the last: not a torn final write)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3][:30] + "\n"
    path.write_text("".join(lines))
    return f"{path}: line 4 is not valid JSON"


def test_damaged_line_is_named_by_planner_report_and_results(planted, ablations, capsys):
    entries, runs_dir, high = planted
    message = damage_best_line(high.run_dir)
    with pytest.raises(EntryError, match="cannot be decided: " + message.replace(".", r"\.")):
        make_plan(entries["problem1.b"], None, runs_dir)
    with pytest.raises(RecordError, match=message.replace(".", r"\.")):
        read_record(high.run_dir)
    code = main(["report", "problem1.a", "--no-figures", "--ablations-dir", str(ablations), "--runs-dir",
                 str(runs_dir), "--out", str(runs_dir.parent / "report")])
    err = capsys.readouterr().err
    assert code != 0 and message in err


def test_a_lost_best_point_is_named_not_replaced(planted, ablations, capsys):
    entries, runs_dir, high = planted
    path = high.run_dir / "metrics.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))  # best point gone: a short trace
    with pytest.raises(EntryError, match="holds no validation point at step 20"):
        make_plan(entries["problem1.b"], None, runs_dir)
    code = main(["report", "problem1.a", "--no-figures", "--ablations-dir", str(ablations), "--runs-dir",
                 str(runs_dir), "--out", str(runs_dir.parent / "report")])
    assert code != 0 and "holds no validation point at step 20" in capsys.readouterr().err


def test_damaged_status_is_named(planted, ablations, capsys):
    entries, runs_dir, high = planted
    (high.run_dir / "status.json").write_text('{"state": "fini')
    with pytest.raises(EntryError, match=r"status.json: is not valid JSON"):
        make_plan(entries["problem1.b"], None, runs_dir)
    code = main(["report", "problem1.a", "--no-figures", "--ablations-dir", str(ablations), "--runs-dir",
                 str(runs_dir), "--out", str(runs_dir.parent / "report")])
    assert code != 0 and "status.json: is not valid JSON" in capsys.readouterr().err
