"""The ``report``, ``export`` and ``grade`` subcommands of ``mtl-ablate``.

``mtl.suite`` (the ``mtl-ablate`` console script) calls :func:`register` with its subparsers; ``python -m report`` runs the same
commands on their own. Every handler returns the exit code: 0 done, 1 done with problems (a figure not
drawn, an entry without runs, a run not exported), 2 refused (bad input, unknown entry, a secret found).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

from mtl.rundir import default_ablations_dir, default_runs_dir

EXIT_OK, EXIT_PROBLEMS, EXIT_REFUSED = 0, 1, 2
# Spelled out here so that building the parser imports neither pandas nor matplotlib (mtl-ablate starts
# fast); tests check they match report.writeup.FORMATS and report.tables.NOISE_RULES.
FORMAT_CHOICES = ("md", "latex", "csv")
NOISE_RULE_CHOICES = ("welch", "max_std")


def _entries(ablations_dir: Path, ids: list[str], every: bool) -> list[Any]:
    from mtl.ablate.entry import load_entries, select_entries

    entries = load_entries(ablations_dir)
    if every:
        return list(entries.values())
    if not ids:
        raise ValueError("name entry ids or pass --all (see `mtl-ablate list`)")
    return select_entries(entries, ids)


def _fail(command: str, exc: BaseException) -> int:
    print(f"mtl-ablate {command}: {exc}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_report(args: argparse.Namespace) -> int:
    from mtl.ablate.entry import EntryError
    from report.cache import default_cache_dir
    from report.store import LocalStore, StoreError, WandbStore
    from report.writeup import ReportError, write_report

    try:
        entries = _entries(args.ablations_dir, args.ids, args.all)
        if args.wandb:
            entity, _, project = args.wandb.rpartition("/")
            store: Any = WandbStore(entity or None, project)
        else:
            store = LocalStore(args.runs_dir, cache_dir=None if args.no_cache else default_cache_dir())
        results = store.load([e.id for e in entries])
        formats = args.format or ["md", "latex", "csv"]
        result = write_report(entries, results, args.out, formats, draw_figures=not args.no_figures,
                              dataset_root=args.dataset_root, noise_rule=args.noise_rule,
                              runs_label=str(args.runs_dir) if not args.wandb else f"W&B {args.wandb}")
    except (EntryError, StoreError, ReportError, ValueError) as exc:
        return _fail("report", exc)
    for path in result.files:
        if path.parent == result.out_dir:
            print(path)
    print(f"{len(result.files)} files under {result.out_dir}")
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return EXIT_PROBLEMS if result.problems else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from mtl.ablate.entry import EntryError
    from report.cache import default_cache_dir
    from report.export import ExportError, export
    from report.leaks import LeakError
    from report.store import StoreError
    from report.writeup import ReportError

    try:
        entries = _entries(args.ablations_dir, args.ids, not args.ids)
        result = export(args.team, args.runs_dir, entries, args.out, dataset_root=args.dataset_root,
                        draw_figures=not args.no_figures, cache_dir=None if args.no_cache else default_cache_dir())
    except (EntryError, StoreError, ReportError, ExportError, LeakError, ValueError) as exc:
        return _fail("export", exc)
    print(result.path)
    print(f"{len(result.exported_runs)} submission.zip file(s), {len(result.members)} members")
    for run, why in result.skipped_runs.items():
        print(f"not exported: {run} ({why})", file=sys.stderr)
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return EXIT_PROBLEMS if result.skipped_runs or result.problems else EXIT_OK


def cmd_grade(args: argparse.Namespace) -> int:
    from mtl.data.miniscapes import DatasetError
    from report.grade import GradeError, grade

    try:
        metrics = grade(args.submission, args.dataset_root)
    except (GradeError, DatasetError) as exc:
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
        parser.add_argument("--no-cache", action="store_true",
                            help="read every run again instead of the summaries cached under $MTL_CACHE_DIR/report-runs")

    p = subparsers.add_parser("report", help="tables, figures and the write-up skeleton of entries")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every entry, in assignment order")
    p.add_argument("--format", action="append", choices=FORMAT_CHOICES,
                   help="md, latex or csv; repeat for several (default: all three)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports/)")
    p.add_argument("--noise-rule", choices=NOISE_RULE_CHOICES, default="welch",
                   help="when a variant is within seed noise of the winner (default: welch)")
    p.add_argument("--wandb", metavar="[ENTITY/]PROJECT",
                   help="read the results from W&B instead of the run directories (needs credentials)")
    where(p)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("export", help="build dlad_ex2_report.<team>.zip (write-up + cited submission.zip files)")
    p.add_argument("ids", nargs="*", metavar="ID", help="entries to include (default: all)")
    p.add_argument("--team", required=True, help="team name, part of the archive's file name")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder for the archive (default: reports/)")
    where(p)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("grade", help="validate a submission.zip and score it against a dataset's test labels")
    p.add_argument("submission", type=Path)
    p.add_argument("--dataset-root", type=Path, required=True, help="dataset whose test split has labels")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_grade)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m report", description=__doc__.split("\n\n")[0])
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)
