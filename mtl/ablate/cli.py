"""The suite's subcommands of ``mtl-ablate``: list, show, run, follow and sweep the entries of ``ablations/``.

The console script itself is :mod:`mtl.suite`, which adds the report's subcommands (``report.commands``)
through ``extra_commands``; this module does not import the report package.

Exit codes: 0 success (for ``run``: every run finished), 1 some run failed or did not finish,
2 bad input (an invalid entry, an unknown id, an unresolved ``best of`` base), 128+N stopped by
a stop signal N (SIGINT 130, SIGTERM 143, SIGUSR2 140, SIGHUP 129) after the running trainings checkpointed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from rich.table import Table
from rich.text import Text

from mtl.rundir import default_ablations_dir, default_runs_dir, parse_run_name, read_status, recorded_state
from mtl.stopping import describe_signal

from .adhoc import AdhocError, adhoc_entry_data, make_adhoc_entry, saved_adhoc_entries
from .arguments import SuggestingParser, add_adhoc_arguments
from .backends import LocalBackend, SlurmOptions, SubmititBackend, parse_devices, placements
from .display import Monitor, format_duration, format_number, format_params, make_console, results_table
from .entry import Entry, EntryError, entry_json_schema_text, load_entries, select_entries
from .planner import Plan, UnresolvedBase, make_plan
from .scheduler import Scheduler, planned_action

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


# -------------------------------------------------------------------------------------------- helpers


def _entries(args: argparse.Namespace) -> dict[str, Entry]:
    """The ablations folder's entries, and the ad-hoc ones named on the line whose YAML is beside their runs."""
    entries = load_entries(args.ablations_dir)
    ids = getattr(args, "ids", None) or ([args.id] if getattr(args, "id", None) else [])
    return {**saved_adhoc_entries(args.ablations_dir, args.runs_dir, [i for i in ids if i not in entries]), **entries}


def _adhoc(args: argparse.Namespace, entries: dict[str, Entry]) -> Entry:
    """The entry that ``run --grid/--set`` describes (validated like a file entry, its YAML written)."""
    if args.ids or not args.name:
        raise UsageError("an ad-hoc grid (--grid/--set) needs --name NAME and no entry IDs")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
        data = adhoc_entry_data(args.grid, args.set, args.base or args.profile or "quick", seeds=seeds)
    except (AdhocError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    entry = make_adhoc_entry(args.name, data, args.ablations_dir, args.runs_dir, args.save)
    entries[entry.id] = entry
    return entry


def _select(entries: dict[str, Entry], ids: list[str]) -> list[Entry]:
    try:
        return select_entries(entries, ids)
    except ValueError as exc:
        raise UsageError(f"{exc} (see `mtl-ablate list`)") from None


def with_prerequisites(selected: list[Entry], entries: dict[str, Entry]) -> list[Entry]:
    """The selected entries preceded by the entries their 'best of' bases depend on, each once, in order."""
    ordered: list[Entry] = []
    for entry in selected:
        chain = [entry]
        while chain[-1].best_of is not None:
            chain.append(entries[chain[-1].best_of])
        for item in reversed(chain):
            if item not in ordered:
                ordered.append(item)
    return ordered


def disk_summary(entry: Entry, runs_dir: Path) -> tuple[str, int, int]:
    """(state, finished, expected) counted from the entry's run directories under any profile.

    A (variant, seed) pair counts as finished when any of its directories finished.
    """
    pairs: dict[tuple[str, int], set[str]] = {}
    folder = runs_dir / entry.id
    if folder.is_dir():
        for child in folder.iterdir():
            name = parse_run_name(child.name)
            if child.is_dir() and name:
                key = (name.variant, name.seed)
                pairs.setdefault(key, set()).add(recorded_state(child))
    expected = entry.run_count()
    finished = sum(1 for states in pairs.values() if "finished" in states)
    failed = any("finished" not in states and states & {"failed", "diverged"} for states in pairs.values())
    if not pairs:
        state = "not run"
    elif finished >= expected:
        state = "done"
    elif failed:
        state = "failed"
    else:
        state = "partial"
    return state, finished, expected


# -------------------------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    console = make_console()
    entries = _entries(args)
    table = Table(title=f"ablation entries ({args.ablations_dir}; runs counted in {args.runs_dir})")
    # Ids stay whole (they are typed back); the question folds to the width left.
    longest_id = max((len(entry_id) for entry_id in entries), default=5)
    table.add_column("entry", no_wrap=True, min_width=longest_id)
    table.add_column("item", no_wrap=True)
    table.add_column("question (base)", overflow="fold", ratio=1)
    table.add_column("runs", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for entry in entries.values():
        state, finished, expected = disk_summary(entry, args.runs_dir)
        question = " ".join(entry.question.split())
        if len(question) > 90 and not args.full:
            question = question[:87] + "..."
        table.add_row(entry.id, entry.item, Text(f"{question}\n(base: {entry.base})"), f"{finished}/{expected}", state)
    console.print(table)
    return EXIT_OK


def _plan(entry: Entry, args: argparse.Namespace, allow_unresolved: bool) -> Plan:
    return make_plan(entry, args.profile, args.runs_dir, allow_unresolved=allow_unresolved)


def _print_plan(console: Any, plan: Plan, args: argparse.Namespace, title: str) -> None:
    entry = plan.entry
    console.print(
        f"[bold]{entry.id}[/bold] (item {entry.item}): {' '.join(entry.question.split())}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"  base: {plan.base.describe()}", markup=False, highlight=False, soft_wrap=True)
    if entry.overrides:
        console.print(f"  overrides: {format_params(entry.overrides)}", markup=False, highlight=False, soft_wrap=True)
    if plan.base.unresolved:
        console.print(
            "  [yellow]the base is unresolved: the run names and configs below are provisional "
            "(built on the profile alone)[/yellow]"
        )
    table = Table(title=title)
    for column in ("run", "variant", "seed", "differences from the base", "state", "action"):
        table.add_column(column, overflow="fold")
    for run in plan.runs:
        differences = {k: v for k, v in run.differences.items()}
        action = planned_action(run, getattr(args, "retry_failed", False), getattr(args, "force", False))
        table.add_row(run.name, run.variant, str(run.seed), format_params(differences) or "-",
                      recorded_state(run.run_dir), str(action) if not run.provisional else "wait for the base")
    console.print(table)
    console.print(
        f"  run directories: {args.runs_dir.absolute() / entry.id}", markup=False, highlight=False, soft_wrap=True
    )


def cmd_show(args: argparse.Namespace) -> int:
    console = make_console()
    entries = _entries(args)
    for entry in _select(entries, args.ids):
        plan = _plan(entry, args, allow_unresolved=True)
        _print_plan(console, plan, args, title=f"{entry.id}: {len(plan.runs)} runs")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    console = make_console()
    entries = _entries(args)
    selected = _select(entries, args.ids) if args.ids else list(entries.values())
    for entry in selected:
        plan = _plan(entry, args, allow_unresolved=True)
        table = Table(title=f"{entry.id} ({plan.base.profile} profile)")
        for column in (
            "variant",
            "seed",
            "state",
            "epoch",
            "best grader",
            "IoU",
            "SI-logRMSE",
            "elapsed",
            "ETA",
            "error",
        ):
            table.add_column(column, overflow="fold")
        for run in plan.runs:
            status = read_status(run.run_dir)
            best = status.get("best") or {}
            epoch = f"{status['epoch']}/{status.get('num_epochs', '?')}" if "epoch" in status else "-"
            state = recorded_state(run.run_dir)
            table.add_row(
                run.variant, str(run.seed), state, epoch, format_number(best.get("grader")),
                format_number(best.get("iou")), format_number(best.get("si_logrmse")),
                format_duration(status.get("elapsed_s")),
                format_duration(status.get("eta_s")) if state == "running" else "-",
                status.get("error") or "",
            )
        console.print(table)
        if plan.base.unresolved:
            console.print(
                f"  waiting for the base: {plan.base.unresolved}", markup=False, highlight=False, soft_wrap=True
            )
    return EXIT_OK


def _make_backend(args: argparse.Namespace) -> tuple[Any, list]:
    if args.backend == "slurm":
        options = SlurmOptions(
            partition=args.slurm_partition, timeout_min=args.slurm_timeout_min, gpus_per_node=args.slurm_gpus,
            cpus_per_task=args.slurm_cpus, mem_gb=args.slurm_mem_gb,
        )
        try:
            backend = SubmititBackend(args.runs_dir / ".submitit", options, cluster="slurm")
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
        # SLURM queues the jobs itself: submit everything at once.
        return backend, [backend.placement] * 10_000
    try:
        devices = parse_devices(args.devices)
        slots = placements(devices, args.jobs_per_device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return LocalBackend(slots), slots


def cmd_run(args: argparse.Namespace) -> int:
    console = make_console()
    entries = _entries(args)
    if args.grid or args.set:
        selected = [_adhoc(args, entries)]
    elif not args.ids:
        raise UsageError("name entry IDs to run, or an ad-hoc grid with --grid KEY=V1,V2 --name NAME")
    else:
        selected = _select(entries, args.ids)
    if args.with_deps:
        selected = with_prerequisites(selected, entries)
    if args.dry_run:
        for entry in selected:
            plan = _plan(entry, args, allow_unresolved=True)
            _print_plan(console, plan, args, title=f"{entry.id}: dry run, nothing is started")
        return EXIT_OK
    backend, slots = _make_backend(args)
    exit_code = EXIT_OK
    for entry in selected:
        try:
            plan = _plan(entry, args, allow_unresolved=False)
        except UnresolvedBase as exc:
            raise UsageError(
                f"{entry.id}: its base is 'best of {exc.entry_id}', which cannot be resolved: {exc}"
            ) from None
        console.print(
            f"{entry.id}: {len(plan.runs)} runs; base: {plan.base.describe()}; "
            f"runs in {args.runs_dir.absolute() / entry.id}",
            markup=False,
            highlight=False,
        )
        scheduler = Scheduler(backend, slots, Monitor(console), retry_failed=args.retry_failed, force=args.force)
        outcomes = scheduler.run(plan.runs)
        console.print(results_table(plan.runs, title=f"{entry.id}: best-grader validation point of each run"))
        for outcome in outcomes:
            if outcome.state != "finished":
                console.print(
                    f"  {outcome.spec.name}: {outcome.state}: {outcome.message}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        if any(o.state != "finished" for o in outcomes):
            exit_code = EXIT_RUN_FAILED
        if scheduler.stop_signal is not None:
            console.print(f"stopped by {describe_signal(scheduler.stop_signal)}; run the same command again to resume")
            return 128 + scheduler.stop_signal
    return exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import MissingCredentials, create_sweep, sweep_config, write_sweep

    console = make_console()
    entries = _entries(args)
    (entry,) = _select(entries, [args.id])
    try:
        plan = _plan(entry, args, allow_unresolved=False)
    except UnresolvedBase as exc:
        raise UsageError(f"{entry.id}: its base cannot be resolved: {exc}") from None
    # The agents plan the entry again: from the same entries, and runs where `run` puts them.
    ablations_dir = None if args.ablations_dir == default_ablations_dir() else args.ablations_dir.absolute()
    config = sweep_config(plan, args.runs_dir, ablations_dir, args.project, args.entity)
    path = write_sweep(config, args.out or args.runs_dir / entry.id / "sweep-configs")
    console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    if args.create:
        try:
            sweep_id = create_sweep(config)
        except MissingCredentials as exc:
            raise UsageError(str(exc)) from None
        console.print(f"created sweep {sweep_id}; start agents in this checkout with `wandb agent {sweep_id}`",
                      markup=False)
    else:
        console.print(f"register it by adding --create (or with `wandb sweep {path}`), "
                      "then start agents in this checkout with `wandb agent ID`", markup=False, soft_wrap=True)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(entry_json_schema_text())
    return EXIT_OK


# -------------------------------------------------------------------------------------------- parser


def build_parser(extra_commands: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    """The parser of the suite's subcommands; each of ``extra_commands`` adds more to its subparsers."""
    parser = SuggestingParser(
        prog="mtl-ablate",
        description="Plan, run, follow and export the ablation entries of ablations/ (one per assignment question).",
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--ablations-dir",
        type=Path,
        default=default_ablations_dir(),
        help="folder of entries and profiles (default: $MTL_ABLATIONS_DIR or the repository's ablations/)",
    )
    where.add_argument("--runs-dir", type=Path, default=default_runs_dir(),
                       help="root of the run directories (default: $MTL_RUNS_DIR or ./runs)")
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("--profile", help="profile to use instead of the entry's base profile (quick, full, ...)")

    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = subparsers.add_parser("list", parents=[where], help="entries with their question and state")
    p.add_argument("--full", action="store_true", help="do not shorten the questions")
    p.set_defaults(func=cmd_list)

    p = subparsers.add_parser(
        "show", parents=[where, profile], help="the resolved runs of entries and their differences from the base"
    )
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_show)

    p = subparsers.add_parser(
        "run",
        parents=[where, profile],
        help="train the runs of entries (skips finished runs, resumes interrupted ones)",
    )
    p.add_argument("ids", nargs="*", metavar="ID")
    add_adhoc_arguments(p)
    p.add_argument("--devices", help="'cpu' or GPU indices such as 0,1 (default: every visible GPU, else the CPU)")
    p.add_argument("--jobs-per-device", type=int, default=1, help="runs sharing one device at a time (default 1)")
    p.add_argument("--dry-run", action="store_true", help="show what would run, start nothing")
    p.add_argument(
        "--force",
        action="store_true",
        help="delete the selected runs' directories (finished ones too) and train them again",
    )
    p.add_argument("--retry-failed", action="store_true", help="retry runs that failed or diverged earlier")
    p.add_argument("--with-deps", action="store_true", help="first run the entries that 'best of' bases depend on")
    p.add_argument(
        "--backend", choices=("local", "slurm"), default="local", help="local subprocesses or SLURM jobs via submitit"
    )
    p.add_argument("--slurm-partition", help="SLURM partition")
    p.add_argument("--slurm-timeout-min", type=int, default=720, help="SLURM job time limit in minutes (default 720)")
    p.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per SLURM job (default 1; 0 for CPU jobs)")
    p.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per SLURM job (default 8)")
    p.add_argument("--slurm-mem-gb", type=int, help="memory per SLURM job in GB")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("status", parents=[where, profile], help="state, progress and best grader of each run")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("sweep", parents=[where, profile],
                              help="write the W&B grid sweep of an entry (its runs as grid points)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--out", type=Path, help="folder for the sweep YAML file (default: <runs-dir>/<ID>/sweep-configs)")
    p.add_argument("--create", action="store_true", help="also register the sweep with W&B (needs credentials)")
    p.add_argument("--project",
                   help="W&B project of the sweep (default: the profile's wandb_project, $WANDB_PROJECT or mtl-ablate)")
    p.add_argument("--entity", help="W&B entity of the sweep (default: yours)")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("schema", help="print the JSON Schema of the entry format")
    p.set_defaults(func=cmd_schema)

    for register in extra_commands:
        register(subparsers)
    return parser


def run(argv: Optional[list[str]] = None, extra_commands: Sequence[Callable[[Any], None]] = ()) -> int:
    """Parse ``argv`` and run the subcommand; bad input is printed without a traceback (exit 2)."""
    parser = build_parser(extra_commands)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (EntryError, UsageError) as exc:
        print(f"mtl-ablate: {exc}", file=sys.stderr)
        return EXIT_USAGE
