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


def test_the_selected_runs_grouped_by_the_keys_the_entry_varies(entries):
    workspace = dashboard_spec(entries["problem1.lr"], "team", "mtl", ["run1", "run2"])
    assert (workspace.entity, workspace.project, workspace.name) == ("team", "mtl", "problem1.lr")
    assert [g.name for g in workspace.runset_settings.groupby] == ["optimizer_lr", "batch_size"]
    assert workspace.settings.x_axis == "trainer/step"
    # What save() sends: one filter on the runs' ids, the varied config keys to group by.
    view = workspace._to_model().model_dump(by_alias=True, exclude_none=True)
    runset = view["spec"]["section"]["runSets"][0]
    assert runset["filters"]["filters"] == [{"key": {"section": "run", "name": "name"}, "op": "IN",
                                             "value": ["run1", "run2"], "disabled": False}]
    assert runset["grouping"] == [{"section": "config", "name": "optimizer_lr.value"},
                                  {"section": "config", "name": "batch_size.value"}]
    # Without a selection, the entry's W&B group; an entry that varies nothing groups by job type.
    whole = dashboard_spec(entries["problem4.final"], "team", "mtl")._to_model().model_dump(by_alias=True,
                                                                                          exclude_none=True)
    runset = whole["spec"]["section"]["runSets"][0]
    assert runset["filters"]["filters"][0]["key"] == {"section": "run", "name": "group"}
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


def test_the_command_shows_the_runs_every_reader_sees(entries, ablations, capsys, tmp_path):
    """The W&B runs the selected run directories record: another profile's run and a run without a W&B run
    are not shown, a run reused from another entry is."""
    from mtl.ablate.planner import make_plan
    from mtl.run.layout import remember_profile

    write_entry(ablations, "problem1.other", question="Same config elsewhere.", item="1.1c",
                grid={"optimizer_lr": [0.001], "batch_size": [4]})
    entries = load_entries(ablations)
    runs_dir = tmp_path / "runs"

    def plant(spec, wandb_run_id):
        spec.run_dir.mkdir(parents=True)
        (spec.run_dir / "config.yaml").write_text(spec.config.to_yaml(exclude=("log_dir",)))
        (spec.run_dir / "status.json").write_text(json.dumps({"state": "finished", "wandb_run_id": wandb_run_id}))
        (spec.run_dir / "submission.zip").write_bytes(b"planted")

    (other,) = make_plan(entries["problem1.other"], "quick", runs_dir).runs
    plant(other, "reused1")
    lr = make_plan(entries["problem1.lr"], "quick", runs_dir).runs
    assert lr[0].reused_from is not None
    plant(lr[1], "own2")
    plant(lr[2], None)
    plant(make_plan(entries["problem1.lr"], "full", runs_dir).runs[3], "stale9")
    remember_profile(runs_dir / "problem1.lr", "quick")
    assert commands.main(["dashboard", "problem1.lr", "--ablations-dir", str(ablations), "--runs-dir",
                          str(runs_dir), "--wandb", "team/mtl"]) == 0
    out = capsys.readouterr().out
    assert """runs: Metric("ID") in ['reused1', 'own2']; grouped by optimizer_lr, batch_size""" in out
    assert f"(1 run(s) without a W&B run, not shown: {lr[2].run_dir.name})" in out


class FakeViews:
    """wandb-workspaces' view requests (get_view_dict, upsert_view2) against a dict of saved views."""

    def __init__(self):
        self.views: dict[tuple[str, str, str], dict] = {}
        self.upserts: list[dict] = []

    def get_view_dict(self, entity, project, view_name):
        from wandb_workspaces.workspaces import internal

        found = self.views.get((entity, project, internal._url_query_str_to_internal_name(view_name)))
        if found is None:
            raise ValueError(f"Workspace `{view_name}` not found in project `{project}`")
        return found

    def upsert_view2(self, view):
        self.upserts.append({"id": view.id, "name": view.name, "display_name": view.display_name})
        key = (view.entity, view.project, view.name)
        saved = self.views.setdefault(key, {"id": view.id or f"view{len(self.views)}", "displayName": ""})
        saved.update(displayName=view.display_name, spec=view.spec.model_dump_json(by_alias=True))
        return {"upsertView": {"view": {"id": saved["id"], "name": view.name}, "inserted": not view.id}}


def test_save_updates_the_entrys_view_instead_of_adding_one(entries, monkeypatch):
    from report.dashboard import save_dashboard, view_name

    views = FakeViews()
    monkeypatch.setattr("wandb_workspaces.workspaces.internal.get_view_dict", views.get_view_dict)
    monkeypatch.setattr("wandb_workspaces.workspaces.internal.upsert_view2", views.upsert_view2)

    class Api:  # what Workspace.url asks for the app's address
        class client:
            app_url = "https://wandb.example"

    monkeypatch.setattr("wandb.Api", Api)
    name = view_name("team", "mtl", "problem1.lr")
    assert name.startswith("nw-") and name.endswith("-v") and name == view_name("team", "mtl", "problem1.lr")
    assert view_name("team", "mtl", "problem2.branched") != name
    first = save_dashboard(dashboard_spec(entries["problem1.lr"], "team", "mtl", ["a"]))
    again = save_dashboard(dashboard_spec(entries["problem1.lr"], "team", "mtl", ["a", "b"]))
    assert views.upserts == [{"id": "", "name": name, "display_name": "problem1.lr"},
                             {"id": "view0", "name": name, "display_name": "problem1.lr"}]
    assert first == again and len(views.views) == 1
    assert '"value":["a","b"]' in views.views[("team", "mtl", name)]["spec"]  # the later save's runs

    def missing_project(*args):
        raise ValueError("Project `team/gone` not found.  Do you have access to this project?")

    monkeypatch.setattr("wandb_workspaces.workspaces.internal.get_view_dict", missing_project)
    with pytest.raises(ValueError, match="Project `team/gone` not found"):
        save_dashboard(dashboard_spec(entries["problem1.lr"], "team", "gone", ["a"]))
