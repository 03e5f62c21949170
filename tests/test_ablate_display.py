"""What `mtl-ablate run` shows: live rows from status.json, plain lines off a terminal, the results table."""

from __future__ import annotations

import io
import json

from rich.console import Console

from mtl.ablate.backends import Placement
from mtl.ablate.display import Monitor, results_table
from mtl.ablate.entry import load_entry
from mtl.ablate.planner import plan
from mtl.ablate.scheduler import RunOutcome
from support import REPO
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
              "best": {"grader": 12.345, "epoch": 2, "step": 20}}
    (runs[0].run_dir / "status.json").write_text(json.dumps(status))
    monitor.refresh()
    text = render(io.StringIO(), monitor.table())
    monitor.end()
    row = next(line for line in text.splitlines() if "sgd" in line)
    assert "running" in row and "2/4" in row and "12.35" in row and "1m35s" in row and "cpu x2 threads" in row
    assert "queued" in next(line for line in text.splitlines() if "adam" in line)


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
    assert "problem1.optimizer sgd s0: started on gpu 0, pid 123" in lines[0]
    assert lines[1].endswith("problem1.optimizer sgd s0: finished")


def test_results_table_reports_every_metric_at_the_best_grader_point(tmp_path):
    runs = plan(load_entry(REPO / "ablations" / "problem1.optimizer.yaml"), "quick", tmp_path)
    plant_run(runs[0], [3.0, 9.5, 4.0])  # best at epoch 2, step 20
    text = render(io.StringIO(), results_table(runs))
    sgd = next(line for line in text.splitlines() if "│ sgd" in line)
    cells = [c.strip() for c in sgd.split("│")[1:-1]]
    assert cells == ["sgd", "0", "optimizer=sgd optimizer_lr=0.01", "9.50", "54.75", "28.00", "20", "2", "finished"]
    adam = next(line for line in text.splitlines() if "│ adam" in line)
    assert "not run" in adam
