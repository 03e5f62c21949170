"""W&B workspaces from entries, checked offline on the generated specification; saving needs credentials."""

from __future__ import annotations

import json

import pytest
import wandb_workspaces.reports.v2 as wr

from mtl.ablate.entry import load_entries
from report import commands
from report.dashboard import BEST_GRADER_SUMMARY, dashboard_spec, varied_keys
from support import write_entry


@pytest.fixture()
def entries(ablations):
    write_entry(ablations, "problem1.lr", question="Which learning rate works best?", item="1.1b",
                grid={"optimizer_lr": [0.001, 0.01], "batch_size": [4, 8]})
    write_entry(ablations, "problem2.branched", question="Branched or joint?", item="2",
                variants=[{"name": "joint", "overrides": {"model_name": "deeplabv3p"}},
                          {"name": "branched", "overrides": {"model_name": "branched", "batch_size": 2}}])
    write_entry(ablations, "problem4.final", question="Everything combined.", item="4.6", seeds=[0, 1, 2])
    return load_entries(ablations)


def panels(workspace, section):
    return next(s for s in workspace.sections if s.name == section).panels


def test_runs_of_the_entry_grouped_by_variant(entries):
    workspace = dashboard_spec(entries["problem1.lr"], "team", "mtl")
    assert (workspace.entity, workspace.project, workspace.name) == ("team", "mtl", "problem1.lr")
    assert [g.name for g in workspace.runset_settings.groupby] == ["JobType"]
    assert workspace.settings.x_axis == "trainer/step"
    # What save() sends: one filter on the run's group, one grouping key, the job type.
    view = workspace._to_model().model_dump(by_alias=True, exclude_none=True)
    runset = view["spec"]["section"]["runSets"][0]
    assert runset["filters"]["filters"] == [{"key": {"section": "run", "name": "group"}, "op": "=",
                                             "value": "problem1.lr", "disabled": False}]
    assert runset["grouping"] == [{"section": "run", "name": "jobType"}]


def test_question_metrics_and_losses_against_the_optimizer_step(entries):
    workspace = dashboard_spec(entries["problem1.lr"], "team", "mtl")
    (text,) = panels(workspace, "Question")
    assert isinstance(text, wr.MarkdownPanel) and "Which learning rate works best?" in text.markdown
    curves = panels(workspace, "Validation") + panels(workspace, "Losses")
    assert all(isinstance(p, wr.LinePlot) and p.x == "trainer/step" for p in curves)
    assert all((p.groupby_aggfunc, p.groupby_rangefunc) == ("mean", "stddev") for p in curves)
    assert [p.y for p in curves] == [["val/grader"], ["val/iou"], ["val/si_logrmse"],
                                     ["train/loss", "val/loss"], ["train/loss_semseg", "val/loss_semseg"],
                                     ["train/loss_depth", "val/loss_depth"]]


@pytest.mark.parametrize("entry_id, keys", [("problem1.lr", ["optimizer_lr", "batch_size"]),
                                            ("problem2.branched", ["model_name", "batch_size"])])
def test_parallel_coordinates_over_the_varied_keys_to_the_best_grader(entries, entry_id, keys):
    assert varied_keys(entries[entry_id]) == keys
    (plot,) = panels(dashboard_spec(entries[entry_id], "team", "mtl"), "Varied keys")
    assert isinstance(plot, wr.ParallelCoordinatesPlot)
    assert [c.metric.name for c in plot.columns] == [*keys, BEST_GRADER_SUMMARY]
    assert [type(c.metric) for c in plot.columns] == [wr.Config] * len(keys) + [wr.SummaryMetric]


def test_an_entry_that_varies_nothing_has_no_parallel_coordinates(entries):
    workspace = dashboard_spec(entries["problem4.final"], "team", "mtl")
    assert varied_keys(entries["problem4.final"]) == []
    assert [s.name for s in workspace.sections] == ["Question", "Validation", "Losses"]


def test_command_prints_the_workspaces_without_saving(entries, ablations, capsys):
    code = commands.main(["dashboard", "problem1.lr", "problem4.final", "--ablations-dir", str(ablations),
                          "--wandb", "team/mtl"])
    out = capsys.readouterr().out
    assert code == 0
    assert "workspace 'problem1.lr' in team/mtl" in out and "workspace 'problem4.final' in team/mtl" in out
    assert "parallel coordinates: config optimizer_lr | config batch_size | summary best/grader" in out
    assert "(no parallel coordinates: the entry varies no config key)" in out
    assert "2 workspace(s) built, none saved" in out


def test_save_without_credentials_is_refused_before_any_request(entries, ablations, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))

    def no_network(*args, **kwargs):
        raise AssertionError("no request may be made without credentials")

    monkeypatch.setattr("wandb.Api", no_network)
    code = commands.main(["dashboard", "problem1.lr", "--ablations-dir", str(ablations), "--save"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--save needs W&B credentials: set WANDB_API_KEY or run `wandb login`" in err


def test_unknown_entry_is_refused(entries, ablations, capsys):
    assert commands.main(["dashboard", "problem9.nothing", "--ablations-dir", str(ablations)]) == 2
    assert "problem9.nothing" in capsys.readouterr().err


def test_the_specification_is_json(entries):
    # The spec save() would send serialises (no object that only exists in this process).
    view = dashboard_spec(entries["problem2.branched"], "team", "mtl")._to_model()
    json.loads(view.spec.model_dump_json(by_alias=True, exclude_none=True))


def test_save_with_credentials_sends_each_workspace_and_reports_failures(entries, ablations, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)  # well-formed but fake, never sent: the save itself is replaced below
    sent = []

    def save(workspace):
        sent.append((workspace.entity, workspace.project, workspace.name))
        if workspace.name == "problem4.final":
            raise ConnectionError("server unreachable")
        return f"https://wandb.example/{workspace.entity}/{workspace.project}?nw=view"

    monkeypatch.setattr("report.dashboard.save_dashboard", save)
    code = commands.main(["dashboard", "problem1.lr", "problem4.final", "--ablations-dir", str(ablations),
                          "--wandb", "team/mtl", "--save"])
    captured = capsys.readouterr()
    assert sent == [("team", "mtl", "problem1.lr"), ("team", "mtl", "problem4.final")]
    assert "saved: https://wandb.example/team/mtl?nw=view" in captured.out
    assert "problem: problem4.final: the workspace was not saved: server unreachable" in captured.err
    assert code == 1
