"""Entry tables: exact Markdown, LaTeX and CSV text, the winner, seed statistics and the noise flags."""

from __future__ import annotations

import pytest

from planting import plant_run, validation_point
from report import commands, writeup
from report.store import LocalStore
from report.tables import NOISE_RULES, TableError, entry_tables, to_csv, to_latex, to_markdown
from support import compile_latex

ENTRY = "problem1.optimizer"
# variant: (optimizer, lr, [(grader, IoU, SI-logRMSE) of seed 0, seed 1])
SEEDED = {
    "sgd": ("sgd", 0.01, [(10.0, 61.0, 51.0), (12.0, 62.5, 50.5)]),
    "adam": ("adam", 0.0001, [(20.0, 66.0, 46.0), (21.0, 67.0, 46.0)]),
    "mom": ("sgd", 0.001, [(19.0, 65.0, 46.0), (21.0, 66.0, 45.0)]),
}


@pytest.fixture()
def seeded(tmp_path):
    for variant, (optimizer, lr, seeds) in SEEDED.items():
        for seed, (grader, iou, si) in enumerate(seeds):
            # The first point is worse in every metric, so the second is the best-grader point.
            plant_run(tmp_path, ENTRY, variant, seed, overrides={"optimizer": optimizer, "optimizer_lr": lr},
                      points=[validation_point(10, 1, grader - 1, iou - 1, si + 1),
                              validation_point(20, 2, grader, iou, si)],
                      model={"params": 21_500_000, "gflops": 9.25})
    return LocalStore(tmp_path).load()


RUNS_MD = """\
| run              | variant   |   seed | optimizer   | optimizer_lr   |   grader |   IoU |   SI-logRMSE |   step |   epoch |   params (M) |   GFLOPs | winner           |
|:-----------------|:----------|-------:|:------------|:---------------|---------:|------:|-------------:|-------:|--------:|-------------:|---------:|:-----------------|
| sgd-s0-ed79dedc  | sgd       |      0 | sgd         | 0.01           |    10.00 | 61.00 |        51.00 |     20 |       2 |        21.50 |     9.25 |                  |
| sgd-s1-c0cb5f6c  | sgd       |      1 | sgd         | 0.01           |    12.00 | 62.50 |        50.50 |     20 |       2 |        21.50 |     9.25 |                  |
| adam-s0-1272d084 | adam      |      0 | adam        | 0.0001         |    20.00 | 66.00 |        46.00 |     20 |       2 |        21.50 |     9.25 | leads, undecided |
| adam-s1-105cd1ae | adam      |      1 | adam        | 0.0001         |    21.00 | 67.00 |        46.00 |     20 |       2 |        21.50 |     9.25 | leads, undecided |
| mom-s0-4b07e831  | mom       |      0 | sgd         | 0.001          |    19.00 | 65.00 |        46.00 |     20 |       2 |        21.50 |     9.25 |                  |
| mom-s1-ab7b6984  | mom       |      1 | sgd         | 0.001          |    21.00 | 66.00 |        45.00 |     20 |       2 |        21.50 |     9.25 |                  |
"""  # noqa: E501 (expected output)

# The decision's seed-paired test, by hand: graders sgd 10, 12; adam 20, 21; mom 19, 21. The additive fit
# (grand mean 103/6, variant means 11, 20.5, 20, seed means 49/3, 18) leaves residuals +-1/6, +-1/3, +-1/6:
# squares 1/3 over (3 - 1)(2 - 1) = 2 degrees of freedom, variance 1/6. adam - mom: differences 1, 0, mean 0.5,
# t = 0.5 / sqrt(2 * (1/6) / 2) = 1.22, p = 0.173 -> not separated; adam - sgd: mean 9.5, t = 23.3, p = 0.001.
VARIANTS_LATEX = r"""\begin{tabular}{lllrrrrrrrrrll}
\toprule
variant & optimizer & optimizer\_lr & seeds & finished & grader & grader std & IoU & IoU std & SI-logRMSE & SI-logRMSE std & $\Delta$ grader & within noise & winner \\
\midrule
sgd & sgd & 0.01 & 2 & 2 & 11.00 & 1.41 & 61.75 & 1.06 & 50.75 & 0.35 & -9.50 & no (p=0.001) &  \\
adam & adam & 0.0001 & 2 & 2 & 20.50 & 0.71 & 66.50 & 0.71 & 46.00 & 0.00 & +0.00 &  & leads, undecided \\
mom & sgd & 0.001 & 2 & 2 & 20.00 & 1.41 & 65.50 & 0.71 & 45.50 & 0.71 & -0.50 & yes (p=0.173) &  \\
\bottomrule
\end{tabular}
"""  # noqa: E501 (expected output)

VARIANTS_CSV = """\
variant,optimizer,optimizer_lr,seeds,finished,grader,grader_std,iou,iou_std,si_logrmse,si_logrmse_std,delta,within_noise,winner
sgd,sgd,0.01,2,2,11.0,1.4142135623730951,61.75,1.0606601717798212,50.75,0.3535533905932738,-9.5,no (p=0.001),
adam,adam,0.0001,2,2,20.5,0.7071067811865476,66.5,0.7071067811865476,46.0,0.0,0.0,,"leads, undecided"
mom,sgd,0.001,2,2,20.0,1.4142135623730951,65.5,0.7071067811865476,45.5,0.7071067811865476,-0.5,yes (p=0.173),
"""


def test_run_table_markdown_is_exact(seeded):
    tables = entry_tables(seeded, ENTRY, variant_order=["sgd", "adam", "mom"])
    assert tables.parameters == ["optimizer", "optimizer_lr"]
    assert tables.winner == "adam"
    assert to_markdown(tables.runs_display) == RUNS_MD


def test_variant_table_latex_and_csv_are_exact(seeded):
    tables = entry_tables(seeded, ENTRY, variant_order=["sgd", "adam", "mom"])
    assert to_latex(tables.variants_display) == VARIANTS_LATEX
    assert to_csv(tables.variants) == VARIANTS_CSV


def test_max_std_rule_and_default_order(seeded):
    tables = entry_tables(seeded, ENTRY, noise_rule="max_std")
    # Default order: by the shown parameters (optimizer, then learning rate).
    assert list(tables.summary["variant"]) == ["adam", "mom", "sgd"]
    assert list(tables.summary["within_noise"]) == ["", "yes", "no"]  # |-0.5| < 1.41, |-9.5| > 1.41


def test_requested_columns_and_unknown_rule(seeded):
    assert entry_tables(seeded, ENTRY, columns=["optimizer_lr"]).parameters == ["optimizer_lr"]
    with pytest.raises(TableError, match="not config keys"):
        entry_tables(seeded, ENTRY, columns=["learning_rate"])
    with pytest.raises(TableError, match="noise rule 'ttest'"):
        entry_tables(seeded, ENTRY, noise_rule="ttest")
    with pytest.raises(TableError, match="no runs of ablation 'problem9.x'"):
        entry_tables(seeded, "problem9.x")


def test_rank_by_another_metric_picks_the_lowest_si_logrmse(seeded):
    tables = entry_tables(seeded, ENTRY, rank_metric="val/si_logrmse", rank_mode="min")
    assert tables.winner == "mom"  # best SI-logRMSE per run 46/45 -> mean 45.5 (adam: 46)
    assert "best si_logrmse" in tables.variants_display.columns
    assert "Δ best si_logrmse" in tables.variants_display.columns


def test_single_seed_table_with_a_failed_run_and_none_values(tmp_path):
    plant_run(tmp_path, "e", "a", 0, overrides={"aspp": True, "aspp_rates": [6, 12, 18]},
              points=[validation_point(10, 1, 30.0, 70.25, 40.125)])
    plant_run(tmp_path, "e", "b", 0, overrides={"aspp": False}, points=[], state="failed")
    tables = entry_tables(LocalStore(tmp_path).load(), "e")
    assert tables.variants is None  # one seed each: no per-variant table
    # The only variant that ran wins by the rule alone: b failed and is named, never compared.
    assert tables.decision.describe() == "by rule, not decided: a (the only variant that ran) (among the variants " \
        "that ran; b did not)"
    assert to_markdown(tables.runs_display) == """\
| run           | variant   |   seed | aspp   | aspp_rates   |   grader |   IoU |   SI-logRMSE |   step |   epoch | state    | winner       | note                           |
|:--------------|:----------|-------:|:-------|:-------------|---------:|------:|-------------:|-------:|--------:|:---------|:-------------|:-------------------------------|
| b-s0-ed79dedc | b         |      0 | false  | none         |        – |     – |            – |      – |       – | failed   |              | never validated (state failed) |
| a-s0-a42ef57f | a         |      0 | true   | 6, 12, 18    |    30.00 | 70.25 |        40.12 |     10 |       1 | finished | by rule only |                                |
"""  # noqa: E501 (expected output)
    assert to_latex(tables.runs_display) == r"""\begin{tabular}{llrllrrrrrlll}
\toprule
run & variant & seed & aspp & aspp\_rates & grader & IoU & SI-logRMSE & step & epoch & state & winner & note \\
\midrule
b-s0-ed79dedc & b & 0 & false & none & -- & -- & -- & -- & -- & failed &  & never validated (state failed) \\
a-s0-a42ef57f & a & 0 & true & 6, 12, 18 & 30.00 & 70.25 & 40.12 & 10 & 1 & finished & by rule only &  \\
\bottomrule
\end{tabular}
"""


def test_command_choices_match_the_modules():
    assert set(commands.FORMAT_CHOICES) == set(writeup.FORMATS)
    assert set(commands.NOISE_RULE_CHOICES) == set(NOISE_RULES)


def test_latex_tables_compile(seeded, tmp_path):
    tables = entry_tables(seeded, ENTRY)
    body = "\n".join(writeup.latex_table(tables, kind, shown, "1.1a: problem1.optimizer", f"tab:{kind}")
                     for kind, _, shown in writeup._table_parts(tables))
    document = writeup.LATEX_PREAMBLE + body + "\n\\end{document}\n"
    (tmp_path / "t.tex").write_text(document)
    compile_latex(tmp_path / "t.tex")


def test_a_tie_on_the_grader_is_decided_by_iou_minus_si_logrmse_and_said(tmp_path):
    # The demo's case: lr 0.1 reaches grader 0 with IoU 2.08; lr 0.01 also grader 0 but IoU 10.79.
    plant_run(tmp_path, "e", "lr0.1", 0, overrides={"optimizer_lr": 0.1},
              points=[validation_point(10, 1, 0.0, 2.08, 60.0)])
    plant_run(tmp_path, "e", "lr0.01", 0, overrides={"optimizer_lr": 0.01},
              points=[validation_point(10, 1, 0.0, 5.29, 61.83), validation_point(40, 4, 0.0, 10.79, 60.3)])
    tables = entry_tables(LocalStore(tmp_path).load(), "e", variant_order=["lr0.1", "lr0.01"])
    assert tables.winner == "lr0.01"
    assert tables.winner_rule == "tie on grader 0.00: decided by IoU - SI-logRMSE"
    row = tables.runs[tables.runs["variant"] == "lr0.01"].iloc[0]
    assert (row["step"], row["iou"]) == (40, 10.79)  # the run's best point is the later, better one
    assert "tie_break" not in to_csv(tables.runs)


def test_a_clear_grader_difference_wins_by_grader(tmp_path):
    plant_run(tmp_path, "e", "a", 0, overrides={"optimizer_lr": 0.1}, points=[validation_point(10, 1, 5.0, 2.0, 90.0)])
    plant_run(tmp_path, "e", "b", 0, overrides={"optimizer_lr": 0.01}, points=[validation_point(10, 1, 3.0, 50.0, 1.0)])
    tables = entry_tables(LocalStore(tmp_path).load(), "e")
    assert (tables.winner, tables.winner_rule) == ("a", "winner by grader")
