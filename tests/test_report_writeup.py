"""``mtl-ablate report``: sections in assignment order with question, tables, figures, config differences
and conclusion placeholders; problems (missing runs, figures that cannot be drawn) are reported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtl.ablate.entry import FIGURE_KINDS, ReportSpec, load_entries
from mtl.data.miniscapes import write_depth, write_rgb, write_semseg
from planting import plant_predictions, plant_run, plant_submission, validation_point
from report.commands import main as report_main
from report.store import LocalStore
from report.writeup import FIGURE_RENDERERS, write_report
from support import compile_latex


def _entry(folder, entry_id, item, question, body):
    (folder / f"{entry_id}.yaml").write_text(f"question: {json.dumps(question)}\nitem: '{item}'\n{body}")


@pytest.fixture()
def project(tmp_path):
    ablations = tmp_path / "ablations"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "quick.yaml").write_text("num_epochs: 2\n")
    # File names sort a_... before b_...; the items put the depth entry (1.2) after the optimizer one (1.10
    # sorts after 1.2 numerically only: 1.2 < 1.10).
    _entry(ablations, "problem1.depth", "1.10", "Metres or log-metres & why?",
           "base: quick\ngrid:\n  depth_unit: [meters, log]\n"
           "report:\n  figures: [curves, qualitative, depth_histogram]\n")
    _entry(ablations, "problem1.opt", "1.2", "Which optimizer?",
           "base: quick\nseeds: [0, 1]\nvariants:\n  - name: sgd\n    overrides: {optimizer: sgd}\n"
           "  - name: adam\n    overrides: {optimizer: adam, optimizer_lr: 1.0e-4}\nreport:\n  figures: [bars]\n")
    # Its own config (no run elsewhere has it: a run of the same config would be reused, not missing).
    _entry(ablations, "problem2.branched", "2", "Branched?", "base: quick\noverrides: {num_epochs: 3}\n")

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        for modality in ("rgb", "semseg", "depth"):
            (data / split / modality).mkdir(parents=True)
        for index in range(1):  # one image keeps the figures (and the test) quick
            write_rgb(data / split / "rgb" / f"{index}.jpg", rng.integers(0, 255, (32, 64, 3), dtype=np.uint8))
            write_semseg(data / split / "semseg" / f"{index}.png", rng.integers(0, 19, (32, 64), dtype=np.uint8))
            write_depth(data / split / "depth" / f"{index}.png", rng.uniform(4, 120, (32, 64)))

    runs = tmp_path / "runs"
    common = {"num_epochs": 2, "dataset_root": str(data)}
    for unit, grader in (("meters", 20.0), ("log", 24.0)):
        run_dir = plant_run(runs, "problem1.depth", f"depth_unit={unit}", 0, overrides={**common, "depth_unit": unit},
                            points=[validation_point(10, 1, grader - 2, 60.0, 40.0),
                                    validation_point(20, 2, grader, 62.0, 38.0)])
        plant_predictions(run_dir, {i: (rng.integers(0, 19, (32, 64), dtype=np.uint8), rng.uniform(4, 120, (32, 64)))
                                    for i in range(1)})
        plant_submission(run_dir)
    for variant, lr, graders in (("sgd", 0.01, (10.0, 11.0)), ("adam", 1e-4, (12.0, 15.0))):
        for seed, grader in enumerate(graders):
            plant_run(runs, "problem1.opt", variant, seed,
                      overrides={**common, "optimizer": variant, "optimizer_lr": lr},
                      points=[validation_point(10, 1, grader, 55.0, 45.0)])
    return {"ablations": ablations, "runs": runs, "data": data, "out": tmp_path / "reports"}


def test_write_report_sections_tables_figures_and_placeholders(project):
    entries = load_entries(project["ablations"])
    result = write_report(entries.values(), LocalStore(project["runs"]).load(), project["out"], runs_label="runs")
    out = project["out"]
    md, tex = (out / "report.md").read_text(), (out / "report.tex").read_text()
    # Assignment order: 1.2 before 1.10 before 2, whatever the file names.
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == ["## 1.2 problem1.opt", "## 1.10 problem1.depth", "## 2 problem2.branched"]
    assert md.index("**Question.** Which optimizer?") < md.index("**Question.** Metres or log-metres & why?")
    for entry_id in ("problem1.opt", "problem1.depth", "problem2.branched"):
        assert f"<!-- CONCLUSION({entry_id}):" in md
        assert f"% TODO(conclusion): {entry_id}" in tex
    assert r"\paragraph{Question.} Metres or log-metres \& why?" in tex
    assert r"\usepackage{booktabs}" in tex and r"\toprule" in tex
    # Config differences that answer the question, in the entry's variant order.
    assert "- Variant sgd: optimizer=sgd, optimizer_lr=0.01." in md
    assert "- Variant adam: optimizer=adam, optimizer_lr=0.0001." in md
    assert md.index("- Variant sgd:") < md.index("- Variant adam:")
    assert "- Variant depth_unit=log: depth_unit=log." in md
    assert "Shared by every run, differing from the template defaults: num_epochs=2." in md
    # Seeds: a per-variant table, the winner, and what the evidence says of it: adam - sgd over seeds 0, 1 is
    # 2 and 4, a paired t of 3 on one degree of freedom, p = 0.10: not separated at 95%.
    assert "Winner: adam with grader 13.50 (mean of 2 finished seeds) (winner by grader)." in md
    assert ("Decision: undecided: adam leads by the rule, but sgd is not separated from it at 95% (seed-paired "
            "t-test with pooled variance).") in md
    assert "| sgd       | sgd         |" in (project["out"] / "tables" / "problem1.opt.variants.md").read_text()
    assert "yes (p=0.102)" in (project["out"] / "tables" / "problem1.opt.variants.md").read_text()
    assert (out / "tables" / "problem1.opt.variants.md").exists()
    assert not (out / "tables" / "problem1.depth.variants.md").exists()  # one seed: no per-variant table
    # Each entry draws the figures it names (every kind once here), as PNG for Markdown and PDF for LaTeX.
    drawn = sorted(p.name for p in (out / "figures").iterdir())
    assert drawn == sorted(f"{stem}.{suffix}" for stem in ("problem1.depth.curves", "problem1.depth.qualitative",
                                                           "problem1.depth.depth_histogram", "problem1.opt.bars")
                           for suffix in ("png", "pdf"))
    for name in drawn:
        assert (out / "figures" / name).stat().st_size > 1000
        stem = name.rsplit(".", 1)[0]
        assert f"](figures/{stem}.png)" in md
        assert f"\\includegraphics[width=\\linewidth]{{figures/{stem}.pdf}}" in tex
    assert result.problems == ["problem2.branched: no runs recorded yet (`mtl-ablate run problem2.branched`)"]
    assert "> **Missing:** no runs recorded yet" in md


def test_the_whole_latex_write_up_compiles_with_its_figures(project):
    entries = load_entries(project["ablations"])
    write_report(entries.values(), LocalStore(project["runs"]).load(), project["out"], runs_label="runs")
    compile_latex(project["out"] / "report.tex")


def test_every_figure_kind_an_entry_may_name_has_a_renderer():
    assert FIGURE_RENDERERS.keys() == FIGURE_KINDS.keys()
    assert ReportSpec(figures=list(FIGURE_KINDS)).figures == list(FIGURE_KINDS)


def test_figure_that_cannot_be_drawn_is_a_reported_problem(project):
    depth = load_entries(project["ablations"])["problem1.depth"]
    depth = depth.model_copy(update={"report": ReportSpec(figures=["qualitative", "depth_histogram"])})
    result = write_report([depth], LocalStore(project["runs"]).load(), project["out"],
                          formats=["md"], dataset_root=project["data"] / "missing")
    assert [p.split(":")[1].strip() for p in result.problems] == ["figure qualitative not drawn",
                                                                  "figure depth_histogram not drawn"]
    assert "does not exist (pass --dataset-root)" in result.problems[0]
    assert not (project["out"] / "report.tex").exists()  # only the formats asked for


def test_report_command(project, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))  # the command caches run summaries there
    common = ["--runs-dir", str(project["runs"]), "--ablations-dir", str(project["ablations"]),
              "--out", str(project["out"]), "--no-figures"]
    assert report_main(["report", "problem1.opt", "--format", "csv", *common]) == 0
    assert sorted(p.name for p in (project["out"] / "tables").iterdir()) == ["problem1.opt.runs.csv",
                                                                             "problem1.opt.variants.csv"]
    # Every written file, nested ones too, relative to the output folder.
    assert capsys.readouterr().out.splitlines() == ["tables/problem1.opt.runs.csv", "tables/problem1.opt.variants.csv",
                                                    f"2 files under {project['out']}"]
    assert report_main(["report", "--all", *common]) == 1  # problem2.branched has no runs
    # The hint repeats the folders the user passed: pasted, it trains the runs this report reads.
    assert (f"problem: problem2.branched: no runs recorded yet (`mtl-ablate run problem2.branched --ablations-dir "
            f"{project['ablations']} --runs-dir {project['runs']}`)") in capsys.readouterr().err
    assert report_main(["report", "problem1.optt", *common]) == 2
    assert "unknown entry 'problem1.optt'; did you mean 'problem1.opt'" in capsys.readouterr().err
    assert report_main(["report", *common]) == 2
