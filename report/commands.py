"""The ``report``, ``export`` and ``grade`` subcommands of ``mtl-ablate``.

``mtl.suite`` (the ``mtl-ablate`` console script) calls :func:`register` with its subparsers;
``python -m report`` runs the same commands on their own. Every handler returns the exit code: 0 done, 1 done with
problems (a figure not drawn, an entry without runs, a run not exported; ``export`` warns and exits 0 for
these unless ``--strict``), 2 refused (bad input, unknown entry, a secret found, a hostile archive).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mtl.ablate.options import Folders, Options
from mtl.run.layout import default_ablations_dir, default_runs_dir

EXIT_OK, EXIT_PROBLEMS, EXIT_REFUSED = 0, 1, 2
# Spelled out here so that building the parser imports neither pandas nor matplotlib (mtl-ablate starts
# fast); tests check they match report.writeup.FORMATS and report.tables.NOISE_RULES.
FORMAT_CHOICES = ("md", "latex", "csv")
NOISE_RULE_CHOICES = ("paired", "welch", "max_std")


@dataclass(frozen=True, kw_only=True)
class ReadOptions(Folders):
    """Which runs of the entries are read, and where their images are."""

    ids: list[str] = field(default_factory=list)
    profile: Optional[str] = None
    dataset_root: Optional[Path] = None
    no_figures: bool = False
    no_cache: bool = False


@dataclass(frozen=True, kw_only=True)
class ReportOptions(ReadOptions):
    all: bool = False
    format: Optional[list[str]] = None
    out: Path = Path("reports")
    noise_rule: str = "paired"
    wandb: Optional[str] = None  # [ENTITY/]PROJECT
    ladder: bool = False


@dataclass(frozen=True, kw_only=True)
class ExportOptions(ReadOptions):
    team: str
    out: Path = Path("reports")
    strict: bool = False


@dataclass(frozen=True, kw_only=True)
class GradeOptions(Options):
    submission: Path
    dataset_root: Optional[Path] = None
    json: bool = False


@dataclass(frozen=True, kw_only=True)
class DashboardOptions(Folders):
    ids: list[str] = field(default_factory=list)
    all: bool = False
    wandb: Optional[str] = None
    save: bool = False
    profile: Optional[str] = None


def _entries(ablations_dir: Path, ids: list[str], every: bool, runs_dir: Optional[Path] = None) -> list[Any]:
    from mtl.ablate.adhoc import saved_adhoc_entries
    from mtl.ablate.entry import load_entries, select_entries

    entries = load_entries(ablations_dir)
    if runs_dir is not None:  # ad-hoc entries (`run --grid`) keep their YAML beside their runs
        entries.update(saved_adhoc_entries(ablations_dir, runs_dir, [i for i in ids if i not in entries]))
    if every:
        return list(entries.values())
    if not ids:
        raise ValueError("name entry ids or pass --all (see `mtl-ablate list`)")
    return select_entries(entries, ids)


def plan_selections(entries: list[Any], runs_dir: Path, profile: Optional[str]) -> dict[str, Any]:
    """Entry id -> the runs of its current plan (mtl.ablate.selection); stale runs are named on stdout."""
    from mtl.ablate.selection import select_runs

    selections = {entry.id: select_runs(entry, runs_dir, profile) for entry in entries}
    for entry_id, selection in selections.items():
        if selection.stale:
            print(f"{entry_id} ({selection.profile} profile): {selection.stale_note}")
    return selections


def _fail(command: str, exc: BaseException) -> int:
    print(f"mtl-ablate {command}: {exc}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_report(args: ReportOptions) -> int:
    from mtl.ablate.entry import EntryError
    from report.cache import default_cache_dir
    from report.store import LocalStore, ResultStore, StoreError
    from report.wandb_store import WandbStore
    from report.writeup import ReportError, write_report

    try:
        entries = _entries(args.ablations_dir, args.ids, args.all, args.runs_dir)
        if args.ladder:
            entries = _ladder_chain(entries, args)
        read = entries + _baseline_entries(entries, args.ablations_dir)  # their runs give Delta_m
        # W&B or not, the runs of each entry's current plan (profile, config, reused runs; stale ones apart).
        selections = plan_selections(read, args.runs_dir, args.profile)
        if args.wandb:
            entity, _, project = args.wandb.rpartition("/")
            store: ResultStore = WandbStore(entity or None, project)
        else:
            store = LocalStore(args.runs_dir, cache_dir=None if args.no_cache else default_cache_dir())
        results = store.load([e.id for e in read], selections=selections)
        if args.ladder:
            return _write_ladder(entries, results, args, selections)
        formats = args.format or ["md", "latex", "csv"]
        result = write_report(entries, results, args.out, formats, draw_figures=not args.no_figures,
                              dataset_root=args.dataset_root, noise_rule=args.noise_rule,
                              runs_label=str(args.runs_dir) if not args.wandb else f"W&B {args.wandb}",
                              runs_dir=None if args.wandb else args.runs_dir, selections=selections)
    except (EntryError, StoreError, ReportError, ValueError) as exc:
        return _fail("report", exc)
    for line in written_files_lines(result.files, Path(result.out_dir)):
        print(line)
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return EXIT_PROBLEMS if result.problems else EXIT_OK


def _baseline_entries(entries: list[Any], ablations_dir: Path) -> list[Any]:
    """The entries ``entries`` name for their single-task baselines, when not among them."""
    from mtl.ablate.entry import load_entries

    wanted = {e.single_task_baselines for e in entries if getattr(e, "single_task_baselines", None)}
    wanted -= {e.id for e in entries}
    if not wanted:
        return []
    every = load_entries(ablations_dir)
    return [every[entry_id] for entry_id in sorted(wanted)]


def _ladder_chain(entries: list[Any], args: ReportOptions) -> list[Any]:
    from mtl.ablate.entry import load_entries
    from mtl.ablate.selection import with_prerequisites

    if len(entries) != 1:
        raise ValueError("--ladder takes one entry: the last step of the chain (e.g. problem4.final)")
    return with_prerequisites(entries, load_entries(args.ablations_dir))


def _write_ladder(chain: list[Any], results: Any, args: ReportOptions, selections: Any) -> int:
    from report.ladder import write_ladder

    markdown, files = write_ladder(chain, results, args.out, noise_rule=args.noise_rule, selections=selections)
    print(markdown)
    for line in written_files_lines(files, args.out):
        print(line)
    return EXIT_OK


def written_files_lines(files: list[Path], out_dir: Path) -> list[str]:
    """Every written file, relative to ``out_dir`` (nested ones too), then how many and where."""
    lines = [str(_relative(path, out_dir)) for path in sorted(set(files))]
    count = len(set(files))
    return [*lines, f"{count} {'file' if count == 1 else 'files'} under {out_dir}"]


def _relative(path: Path, root: Path) -> Path:
    try:
        return Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return Path(path)


def cmd_export(args: ExportOptions) -> int:
    from mtl.ablate.entry import EntryError
    from report.cache import default_cache_dir
    from report.export import ExportError, IncompleteExportError, export
    from report.leaks import LeakError
    from report.store import StoreError
    from report.writeup import ReportError

    try:
        entries = _entries(args.ablations_dir, args.ids, not args.ids, args.runs_dir)
        read = entries + _baseline_entries(entries, args.ablations_dir)  # their runs give Delta_m
        result = export(args.team, args.runs_dir, entries, args.out, dataset_root=args.dataset_root,
                        draw_figures=not args.no_figures, cache_dir=None if args.no_cache else default_cache_dir(),
                        strict=args.strict, selections=plan_selections(read, args.runs_dir, args.profile))
    except IncompleteExportError as exc:
        for line in exc.missing:
            print(f"missing: {line}", file=sys.stderr)
        print("mtl-ablate export: --strict and the archive would be incomplete: nothing written", file=sys.stderr)
        return EXIT_PROBLEMS
    except (EntryError, StoreError, ReportError, ExportError, LeakError, ValueError) as exc:
        return _fail("export", exc)
    print(result.path)
    print(f"{len(result.exported_runs)} submission.zip file(s), {len(result.members)} members")
    for run, why in result.without_submission.items():
        print(f"note: run {run} has no submission.zip: {why}")
    for line in result.missing:
        print(f"missing: {line}", file=sys.stderr)
    if result.missing:
        print(f"warning: the archive is incomplete ({len(result.missing)} item(s) missing, listed above and in its "
              "MANIFEST.json); --strict refuses such an archive", file=sys.stderr)
    return EXIT_OK


def cmd_grade(args: GradeOptions) -> int:
    from report.grade import GradeError, grade, trained_dataset_root

    try:
        dataset_root, how = args.dataset_root, "--dataset-root"
        if dataset_root is None:
            dataset_root, how = trained_dataset_root(args.submission)
        print(f"grading {args.submission} against {dataset_root} ({how})", file=sys.stderr)
        metrics = grade(args.submission, dataset_root)
    except GradeError as exc:
        return _fail("grade", exc)
    if args.json:
        per_class = {k[len("iou_class/"):]: v for k, v in metrics.items() if k.startswith("iou_class/")}
        payload = {"grader": metrics["grader"], "iou": metrics["iou"], "si_logrmse": metrics["si_logrmse"],
                   "iou_class": per_class}
        print(json.dumps({k: _json_number(v) for k, v in payload.items()}))
    else:
        print(f"grader {metrics['grader']:.2f}  IoU {metrics['iou']:.2f}  SI-logRMSE {metrics['si_logrmse']:.2f}")
        for key, value in metrics.items():
            if key.startswith("iou_class/"):
                print(f"  {key[len('iou_class/'):]:<14} {value:6.2f}")
    return EXIT_OK


def cmd_dashboard(args: DashboardOptions) -> int:
    from mtl.ablate.entry import EntryError

    try:
        entries = _entries(args.ablations_dir, args.ids, args.all, args.runs_dir)
        # The runs every reader sees, as report --wandb selects them.
        selections = plan_selections(entries, args.runs_dir, args.profile)
    except (EntryError, ValueError) as exc:
        return _fail("dashboard", exc)
    entity, _, project = (args.wandb or "").rpartition("/")
    entity = entity or os.environ.get("WANDB_ENTITY") or ""
    project = project or os.environ.get("WANDB_PROJECT") or "mtl-ablate"  # the trainer's default project
    if args.save:
        from mtl.train.tracking import has_wandb_credentials

        if not has_wandb_credentials():
            return _fail("dashboard", ValueError(
                "--save needs W&B credentials: set WANDB_API_KEY or run `wandb login` "
                "(without --save the workspaces are only printed)"))
    from report.dashboard import dashboard_spec, describe, save_dashboard, selected_run_ids, varied_keys

    if args.save and not entity:
        try:
            import wandb

            entity = wandb.Api(timeout=30).default_entity or ""
        except Exception as exc:  # noqa: BLE001 - the API raises several unrelated types when offline
            return _fail("dashboard", ValueError(f"cannot ask the W&B server for your default entity: {exc}"))
        if not entity:
            return _fail("dashboard", ValueError("no W&B entity: pass --wandb ENTITY/PROJECT or set WANDB_ENTITY"))
    problems = 0
    for entry in entries:
        run_ids, without = selected_run_ids(selections[entry.id])
        workspace = dashboard_spec(entry, entity, project, run_ids)
        print(describe(workspace))
        if without:
            print(f"  ({len(without)} run(s) without a W&B run, not shown: {', '.join(without)})")
        if not varied_keys(entry):
            print("  (no parallel coordinates: the entry varies no config key)")
        if args.save:
            try:
                print(f"  saved: {save_dashboard(workspace)}")
            except Exception as exc:  # noqa: BLE001 - network and API errors of every kind
                problems += 1
                print(f"problem: {entry.id}: the workspace was not saved: {exc}", file=sys.stderr)
    if not args.save:
        print(f"{len(entries)} workspace(s) built, none saved (--save sends them to W&B)")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _json_number(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def register(subparsers: Any) -> None:
    """Add ``report``, ``export`` and ``grade`` to an argparse subparsers object."""
    def where(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ablations-dir", type=Path, default=default_ablations_dir(),
                            help="folder of entries (default: $MTL_ABLATIONS_DIR or the repository's ablations/)")
        parser.add_argument("--runs-dir", type=Path, default=default_runs_dir(),
                            help="root of the run directories (default: $MTL_RUNS_DIR or ./runs)")
        parser.add_argument("--dataset-root", type=Path,
                            help="dataset for the image figures (default: each run's dataset_root or synthetic cache)")
        parser.add_argument("--no-figures", action="store_true", help="tables and write-up only")
        parser.add_argument("--profile", help="read the runs of this profile (default: the one of each entry's last "
                            "`run`, else the entry's own); runs of other profiles or older configs are left out")
        parser.add_argument(
            "--no-cache",
            action="store_true",
            help="read every run again instead of the summaries cached under $MTL_CACHE_DIR/report-runs",
        )

    p = subparsers.add_parser("report", help="tables, figures and the write-up skeleton of entries")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every entry, in assignment order")
    p.add_argument("--format", action="append", choices=FORMAT_CHOICES,
                   help="md, latex or csv; repeat for several (default: all three)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports/)")
    p.add_argument("--noise-rule", choices=NOISE_RULE_CHOICES, default="paired",
                   help="when a variant is within seed noise of the winner (default: paired, the decision's "
                   "seed-paired test)")
    p.add_argument("--wandb", metavar="[ENTITY/]PROJECT",
                   help="read the results from W&B instead of the run directories (needs credentials); the runs "
                   "are those of each entry's plan, as without it (--runs-dir, --profile)")
    p.add_argument("--ladder", action="store_true",
                   help="one table of the entry and every entry its bases build on, step by step: each winner, "
                   "its metrics and its gain (writes ladder.<entry>.md and .csv)")
    where(p)
    p.set_defaults(func=cmd_report, options=ReportOptions)

    p = subparsers.add_parser("export", help="build dlad_ex2_report.<team>.zip (write-up + cited submission.zip files)")
    p.add_argument("ids", nargs="*", metavar="ID", help="entries to include (default: all)")
    p.add_argument("--team", required=True, help="team name, part of the archive's file name")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder for the archive (default: reports/)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 and write nothing if anything is missing (default: write it, warn, exit 0)")
    where(p)
    p.set_defaults(func=cmd_export, options=ExportOptions)

    p = subparsers.add_parser("grade", help="validate a submission.zip and score it against a dataset's test labels")
    p.add_argument("submission", type=Path)
    p.add_argument("--dataset-root", type=Path,
                   help="dataset whose test split has labels (default: the one the run was trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_grade, options=GradeOptions)

    p = subparsers.add_parser("dashboard", help="a W&B workspace per entry: its runs by variant, curves, varied keys")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every entry, in assignment order")
    p.add_argument("--ablations-dir", type=Path, default=default_ablations_dir(),
                   help="folder of entries (default: $MTL_ABLATIONS_DIR or the repository's ablations/)")
    p.add_argument(
        "--wandb",
        metavar="[ENTITY/]PROJECT",
        help="where the runs are (default: $WANDB_ENTITY or your default entity, $WANDB_PROJECT or mtl-ablate)",
    )
    p.add_argument("--save", action="store_true",
                   help="save each entry's workspace to W&B, updating the one saved before (needs credentials); "
                   "without it they are only printed")
    p.add_argument("--runs-dir", type=Path, default=default_runs_dir(),
                   help="root of the run directories, whose records name each run's W&B run (default: $MTL_RUNS_DIR "
                   "or ./runs)")
    p.add_argument("--profile", help="the runs of this profile (default: the one of each entry's last `run`)")
    p.set_defaults(func=cmd_dashboard, options=DashboardOptions)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m report", description=__doc__.split("\n\n")[0])
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args.options.from_namespace(args))
