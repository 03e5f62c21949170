"""What `mtl-ablate run` shows: live rows from status.json, plain lines off a terminal, the results table."""

from __future__ import annotations

import io
import json

from rich.console import Console

from mtl.ablate.backends import Placement
from mtl.ablate.display import Monitor, results_table
from mtl.ablate.entry import load_entries, load_entry
from mtl.ablate.planner import plan
from mtl.ablate.scheduler import RunOutcome
from support import REPO, write_entry
from test_ablate_planner import plant_run


class FakeJob:
    def describe(self) -> str:
        return "pid 123"


def render(console_file: io.StringIO, renderable) -> str:
    console = Console(file=console_file, width=200, force_terminal=False)
    console.print(renderable)
    return console_file.getvalue()


def test_live_rows_follow_status_json(tmp_path):
    runs = plan(load_entry(REPO / "ablations" / "problem1.optimizer.yaml"), "quick", tmp_path)
    stream = io.StringIO()
    monitor = Monitor(Console(file=stream, width=200, force_terminal=True), live=True)
    monitor.begin(runs)
    monitor.started(runs[0], Placement("cpu", 2), FakeJob())
    runs[0].run_dir.mkdir(parents=True)
    status = {"state": "running", "pid": 123, "epoch": 2, "num_epochs": 4, "eta_s": 95.0,
              "best": {"grader": 12.345, "epoch": 2, "step": 20, "iou": 20.0, "si_logrmse": 40.0},
              "progress": {"step": 50, "total_steps": 96, "epoch": 3, "loss": 0.9421, "lr": 0.01, "it_s": 0.5,
                           "eta_s": 92.0, "at": 1.0}}
    (runs[0].run_dir / "status.json").write_text(json.dumps(status))
    monitor.refresh()
    text = render(io.StringIO(), monitor.table())
    monitor.end()
    row = next(line for line in text.splitlines() if "sgd" in line)
    for cell in ("running", "2/4", "50/96", "0.9421", "0.50", "1m32s", "12.35", "cpu x2 threads"):
        assert cell in row, (cell, row)
    # The log file, not a pid: where the run's whole console output is.
    assert f"{runs[0].entry_id}/.logs/{runs[0].name}.log" in text.replace("\n", "") or ".logs" in text
    assert "pid" not in text
    assert "queued" in next(line for line in text.splitlines() if "adam" in line)
    # The entry's ETA: the running run's 92 s plus the queued run's 96 steps at 0.5 it/s, on one slot.
    assert "problem1.optimizer: ETA 4m44s" in text


def test_a_single_task_run_shows_its_own_metric_where_the_grader_is_not_defined(ablations, tmp_path):
    write_entry(ablations, "problem1.alone", variants=[{"name": "joint", "overrides": {}},
                                                       {"name": "seg", "overrides": {"tasks": "semseg"}},
                                                       {"name": "dep", "overrides": {"tasks": "depth"}}])
    runs = plan(load_entries(ablations)["problem1.alone"], "quick", tmp_path / "runs")
    stream = io.StringIO()
    monitor = Monitor(Console(file=stream, width=250), live=False)
    monitor.begin(runs)
    for run, best in zip(runs, ({"grader": 5.5, "iou": 20.0, "si_logrmse": 40.0},
                                {"grader": float("nan"), "iou": 21.25, "si_logrmse": float("nan")},
                                {"grader": float("nan"), "iou": float("nan"), "si_logrmse": 38.5})):
        run.run_dir.mkdir(parents=True)
        status = {"state": "running", "pid": 123, "epoch": 2, "num_epochs": 4,
                  "best": {"epoch": 2, "step": 20, **best}}
        (run.run_dir / "status.json").write_text(json.dumps(status))
        monitor.started(run, Placement("cpu", 1), FakeJob())
    monitor.refresh()
    lines = render(io.StringIO(), monitor.table()).splitlines()
    rows = {variant: next(line for line in lines if f" {variant} " in line) for variant in ("joint", "seg", "dep")}
    assert "grader 5.50" in rows["joint"] and "IoU 21.25" in rows["seg"] and "SI-logRMSE 38.50" in rows["dep"], rows
    for run in runs:
        (run.run_dir / "status.json").write_text(json.dumps({**json.loads((run.run_dir / "status.json").read_text()),
                                                             "state": "finished"}))
        monitor.settled(RunOutcome(run, "finished", exit_code=0, launched=True))
    monitor.end()
    said = stream.getvalue()
    assert "seg s0: finished (best IoU 21.25 at epoch 2)" in said and "dep s0: finished (best SI-logRMSE 38.50" in said


def test_plain_lines_off_a_terminal(tmp_path):
    runs = plan(load_entry(REPO / "ablations" / "problem1.optimizer.yaml"), "quick", tmp_path)
    stream = io.StringIO()
    monitor = Monitor(Console(file=stream, width=200), live=False)
    monitor.begin(runs)
    monitor.started(runs[0], Placement("0", 8), FakeJob())
    plant_run(runs[0], [3.0, 4.0])
    monitor.settled(RunOutcome(runs[0], "finished", exit_code=0, launched=True))
    monitor.end()
    lines = stream.getvalue().splitlines()
    assert f"problem1.optimizer sgd s0: started on gpu 0 -> {runs[0].run_dir} (log: " in lines[0]
    assert lines[0].endswith(f"{runs[0].entry_id}/.logs/{runs[0].name}.log)")
    assert lines[1].endswith("problem1.optimizer sgd s0: finished")


def test_plain_progress_lines_come_from_the_trainers_record(tmp_path):
    """Off a terminal: no line until the trainer has recorded progress, then step, loss, it/s, ETA of
    the run and of its entry."""
    runs = plan(load_entry(REPO / "ablations" / "problem1.optimizer.yaml"), "quick", tmp_path)
    stream = io.StringIO()
    monitor = Monitor(Console(file=stream, width=200), live=False)
    monitor.begin(runs, slots=2)
    for run in runs:
        monitor.started(run, Placement("cpu", 1), FakeJob())
        run.run_dir.mkdir(parents=True)
    status = {"state": "running", "pid": 123, "epoch": 0, "num_epochs": 4}
    (runs[0].run_dir / "status.json").write_text(json.dumps(status))
    monitor.refresh()
    assert "epoch" not in stream.getvalue()  # set up, nothing trained yet: no empty progress line
    for run, eta in zip(runs, (60.0, 120.0)):
        progress = {"step": 10, "total_steps": 96, "epoch": 1, "loss": 1.75, "lr": 0.01, "it_s": 0.8, "eta_s": eta,
                    "at": 1.0}
        (run.run_dir / "status.json").write_text(json.dumps({**status, "progress": progress}))
    monitor.refresh()
    lines = stream.getvalue().splitlines()
    assert lines[-2].endswith("problem1.optimizer sgd s0: epoch 1/4, step 10/96, loss 1.7500, 0.80 it/s, ETA 1m00s "
                              "(entry 1m30s)")  # (60 + 120) s over two slots
    monitor.end()


def test_results_table_reports_every_metric_at_the_best_grader_point(tmp_path):
    runs = plan(load_entry(REPO / "ablations" / "problem1.optimizer.yaml"), "quick", tmp_path)
    plant_run(runs[0], [3.0, 9.5, 4.0])  # best at epoch 2, step 20
    text = render(io.StringIO(), results_table(runs))
    sgd = next(line for line in text.splitlines() if "│ sgd" in line)
    cells = [c.strip() for c in sgd.split("│")[1:-1]]
    assert cells == ["sgd", "0", "optimizer=sgd optimizer_lr=0.01", "9.50", "54.75", "28.00", "20", "2", "finished"]
    adam = next(line for line in text.splitlines() if "│ adam" in line)
    assert "not started" in adam
