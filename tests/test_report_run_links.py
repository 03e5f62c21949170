"""Run tables link each run to its W&B page when the run was logged online: the run name in Markdown,
a url column in the CSV, nothing in LaTeX (the report loads no hyperref)."""

from __future__ import annotations

import pytest

from planting import plant_run, validation_point
from report.store import LocalStore, StoreError
from report.tables import entry_tables, to_markdown
from report.writeup import render_tables, write_tables

ENTRY = "problem1.optimizer"
URL = "https://wandb.example/team/mtl/runs/3kq9x2ab"


@pytest.fixture()
def runs_root(tmp_path):
    plant_run(tmp_path, ENTRY, "adam", 0, overrides={"optimizer": "adam"}, status_extra={"wandb_url": URL},
              points=[validation_point(10, 1, 20.0, 66.0, 46.0)])
    plant_run(tmp_path, ENTRY, "sgd", 0, overrides={"optimizer": "sgd"},  # logged offline: no URL
              points=[validation_point(10, 1, 10.0, 61.0, 51.0)])
    return tmp_path


def test_local_store_reads_the_url_the_trainer_wrote(runs_root):
    runs = LocalStore(runs_root).load().runs.set_index("variant")
    assert runs.loc["adam", "url"] == URL and runs.loc["sgd", "url"] == ""


def test_markdown_links_the_run_name_latex_does_not_and_the_csv_has_a_url_column(runs_root, tmp_path):
    tables = entry_tables(LocalStore(runs_root).load(), ENTRY, variant_order=["adam", "sgd"])
    adam, sgd = tables.runs["run"]
    rendered = render_tables(tables, caption="1.1: optimizer", label_prefix="tab:opt")
    markdown = rendered[("runs", "md")]
    assert f"| [{adam}]({URL}) |" in markdown and f"| {sgd} " in markdown
    assert "url" not in markdown.splitlines()[0]
    latex = rendered[("runs", "latex")]
    assert "https" not in latex and "url" not in latex and adam in latex
    written = write_tables(tables, rendered, tmp_path / "tables", ["csv"])
    header, first, second = written["csv"][0].read_text().splitlines()
    assert header.split(",")[-1] == "url" and first.endswith("," + URL) and second.endswith(",")


def test_markdown_link_text_and_target_are_escaped():
    import pandas as pd

    shown = pd.DataFrame({"run": ["a|b[1]"], "grader": ["1.00"], "url": ["https://w.example/x (1)"]})
    assert "[a\\|b\\[1\\]](https://w.example/x%20%281%29)" in to_markdown(shown)


def test_without_online_runs_the_tables_have_no_url_column(tmp_path):
    plant_run(tmp_path, ENTRY, "sgd", 0, points=[validation_point(10, 1, 10.0, 61.0, 51.0)])
    tables = entry_tables(LocalStore(tmp_path).load(), ENTRY)
    assert "url" not in tables.runs.columns and "url" not in tables.runs_display.columns


@pytest.mark.parametrize("value, message", [(42, r"status.json: field 'wandb_url': Input should be a valid string"),
                                            ("wandb.example/team/mtl/runs/x",
                                             r"status.json: wandb_url must be the run's http\(s\) URL")])
def test_a_url_that_is_not_one_is_an_error_naming_the_file(tmp_path, value, message):
    plant_run(tmp_path, ENTRY, "sgd", 0, status_extra={"wandb_url": value}, summary=False)
    with pytest.raises(StoreError, match=message):
        LocalStore(tmp_path).load()
