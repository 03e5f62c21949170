"""What the command lines say to a user who mistypes or asks for help: ``--help`` anywhere on the line,
the closest flag, subcommand or entry id for a misspelt one, entry ids whole at 80 columns."""

from __future__ import annotations

import subprocess

import pytest

from mtl.suite import main
from support import REPO, train_command


def test_mtl_train_help_anywhere_on_the_line(tmp_path):
    for flag in ("--help", "-h"):
        result = subprocess.run(train_command(f"--log_dir={tmp_path}", flag), cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: mtl-train") and "batch_size" in result.stdout
    assert not any(tmp_path.iterdir())  # asking for help trains nothing


@pytest.mark.parametrize("argv, suggestion", [
    (["run", "problem1.lr", "--profle", "quick"], "did you mean '--profile'?"),
    (["run", "problem1.lr", "--dry-rn"], "did you mean '--dry-run'?"),
    (["run", "problem1.lr", "--backend", "slurn"], "did you mean 'slurm'?"),
    (["lst"], "did you mean 'list'?"),
    (["report", "--all", "--formt", "csv"], "did you mean '--format'?"),
    (["export", "--team", "x", "--stict"], "did you mean '--strict'?"),
    (["status", "--runs-dri", "x"], "did you mean '--runs-dir'?"),
])
def test_misspelt_flags_and_subcommands_get_a_suggestion(argv, suggestion, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert suggestion in err and "usage: mtl-ablate" in err


@pytest.mark.parametrize("command", ["show", "run", "status", "sweep", "report", "export"])
def test_misspelt_entry_ids_get_a_suggestion_in_every_subcommand(command, tmp_path, capsys):
    argv = [command, "problem1.optimzer", "--runs-dir", str(tmp_path)]
    argv += ["--team", "x", "--out", str(tmp_path)] if command == "export" else []
    assert main(argv) == 2
    assert "did you mean 'problem1.optimizer'" in capsys.readouterr().err


def test_list_keeps_entry_ids_whole_at_80_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list", "--runs-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    ids = sorted(path.stem for path in (REPO / "ablations").glob("problem*.yaml"))
    for entry_id in ids:
        assert any(f"│ {entry_id} " in line for line in lines), entry_id
    # Too narrow for the questions: one line per entry, every other column whole, and where to read them.
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == len(ids) and all("not run" in row or "waiting for its base" in row for row in rows)
    assert "mtl-ablate show ID" in "\n".join(lines)
    # Wider: each entry's question and its base on one line each, cut to fit, not folded a word per line.
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["list", "--runs-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("│")]
    assert max(len(line) for line in lines) <= 120 and len(rows) == 2 * len(ids), "\n".join(lines)
    assert "│ problem1.lr " in rows[2] and "(base: best of problem1.optimizer)" in rows[3]


def _subparsers():
    import argparse

    from mtl.ablate.cli import build_parser
    from report.commands import register

    parser = build_parser((register,))
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_flag_of_every_subcommand_reaches_its_typed_options():
    from mtl.ablate.options import flags_without_fields

    subparsers = _subparsers()
    assert set(subparsers) >= {"list", "show", "run", "status", "repair", "sweep", "diff", "schema", "report",
                               "export", "grade", "dashboard"}
    for name, parser in subparsers.items():
        options = parser.get_default("options")
        assert options is not None, f"{name}: no options class"
        assert flags_without_fields(parser, options) == [], name


def test_a_parsed_run_line_becomes_run_options_with_its_slurm_flags(tmp_path):
    from mtl.ablate.options import RunOptions

    parser = _subparsers()["run"]
    namespace = parser.parse_args(["problem1.lr", "--profile", "quick", "--force", "--race-setting", "min_seeds=3",
                                   "--runs-dir", str(tmp_path), "--slurm-partition", "gpu", "--slurm-timeout-min",
                                   "30", "--slurm-profile", "cluster"])
    options = RunOptions.from_namespace(namespace)
    assert (options.ids, options.profile, options.force, options.race_setting) == (
        ["problem1.lr"], "quick", True, ["min_seeds=3"])
    assert options.runs_dir == tmp_path and options.slurm_profile == "cluster"
    assert options.slurm["partition"] == "gpu" and options.slurm["timeout_min"] == 30
    assert "profile" not in options.slurm  # --slurm-profile is its own field, not an sbatch option
