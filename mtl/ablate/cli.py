"""The suite's subcommands of ``mtl-ablate``: list, show, run, follow and sweep the entries of ``ablations/``.

The console script itself is :mod:`mtl.suite`, which adds the report's subcommands (``report.commands``)
through ``extra_commands``; this module does not import the report package.

Exit codes: 0 success (for ``run``: every run ended with a result: finished, diverged or skipped here,
each recorded with its reason), 1 some run failed, was refused or did not finish, or the machine failed the
command (a full disk: one line saying so) or a bug did (its traceback and the log that keeps it),
2 bad input (an invalid entry, an unknown id, an unresolved ``best of`` base, a folder flag that names a
file, a plan this machine cannot run), 128+N stopped by
a stop signal N (SIGINT 130, SIGTERM 143, SIGUSR2 140, SIGHUP 129) after the running trainings checkpointed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml
from rich.table import Table
from rich.text import Text

from mtl.run.errors import RecordError
from mtl.run.layout import (
    DATASET_ROOT_ENV,
    RunDirectory,
    default_ablations_dir,
    default_runs_dir,
    has_started,
    remember_profile,
    remember_racing,
)
from mtl.run.model import STATE_COLUMN, Outcome, RunState, Status
from mtl.run.records import read_status, recorded_state, stall_limit_s, stall_of
from mtl.run.stopping import describe_signal

from . import preflight
from .adhoc import AdhocError, adhoc_entry_from_args, entries_with_adhoc
from .arguments import SuggestingParser, UsageError, add_adhoc_arguments, command_from_args
from .compute import estimate, full_grid_steps, spent, within_budget
from .display import Monitor, format_duration, format_number, format_params, make_console, results_table
from .entry import Entry, EntryError, entry_json_schema_text, root_profile, select_entries
from .failures import describe_os_error, path_problems, report_bug
from .launch import make_backend, print_sbatch
from .options import (
    DiffOptions,
    Folders,
    ListOptions,
    PlanOptions,
    RepairOptions,
    RunOptions,
    SchemaOptions,
    ShowOptions,
    StatusOptions,
    SweepOptions,
)
from .planner import Plan, RunSpec, UnresolvedBase, entry_decision, make_plan, plan_profile, race_step, resolve_racing
from .race import RaceSettings
from .racing import describe_racing, describe_round, race
from .scheduler import ActionKind, Scheduler, finished_action, planned_action
from .selection import stale_note, stale_runs, with_prerequisites
from .slurm import add_slurm_arguments
from .upkeep import plan_when_base_settles, repair_plan

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2


# -------------------------------------------------------------------------------------------- helpers


def _entries(options: Folders, ids: Sequence[str] = ()) -> dict[str, Entry]:
    """The folder's entries and the ad-hoc ones ``ids`` names."""
    return entries_with_adhoc(options.ablations_dir, options.runs_dir, ids)


def _select(entries: dict[str, Entry], ids: list[str]) -> list[Entry]:
    try:
        return select_entries(entries, ids)
    except ValueError as exc:
        raise UsageError(f"{exc} (see `mtl-ablate list`)") from None


def plan_summary(entry: Entry, args: PlanOptions) -> tuple[str, int, int, str]:
    """(state, finished, expected, profile) of the entry's current plan (profile of its last `run`)."""
    try:
        plan = _plan(entry, args, allow_unresolved=True)
    except EntryError:
        return "invalid", 0, entry.run_count(), "?"
    states = [recorded_state(run.run_dir) for run in plan.runs]
    expected = entry.run_count()
    finished = states.count(RunState.FINISHED)
    if plan.base.unresolved:
        state = "waiting for its base"
    elif all(s is RunState.NOT_STARTED for s in states):
        state = "not run"
    elif finished >= expected:
        state = "done"
    elif any(s in (RunState.FAILED, RunState.DIVERGED) for s in states):
        state = "failed"
    else:
        state = "partial"
    return state, finished, expected, plan.base.profile


# -------------------------------------------------------------------------------------------- commands


def cmd_list(args: ListOptions) -> int:
    console = make_console()
    entries = _entries(args)
    planning = PlanOptions(ablations_dir=args.ablations_dir, runs_dir=args.runs_dir)
    rows = []
    for entry in entries.values():
        state, finished, expected, profile = plan_summary(entry, planning)
        rows.append((entry, profile, f"{finished}/{expected}", state))
    # Ids stay whole (they are typed back). Without --full the question and its base take one line each, cut
    # to the width the other columns leave; a terminal too narrow for that gets no question column rather than
    # a question stacked a word per line.
    width = _question_width(console.width, rows) if not args.full else None
    show_question = width is None or width >= MIN_QUESTION_WIDTH
    table = Table(title=f"ablation entries ({args.ablations_dir}; runs counted in {args.runs_dir}, "
                        "under the profile of each entry's last run)",
                  caption=None if show_question else "questions: `mtl-ablate show ID` or `list --full`")
    table.add_column("entry", no_wrap=True, min_width=max((len(e.id) for e, *_ in rows), default=5))
    table.add_column("item", no_wrap=True)
    if show_question:
        table.add_column("question (base)", overflow="fold", ratio=1)
    table.add_column("profile", no_wrap=True)
    table.add_column("runs", no_wrap=True)
    table.add_column(STATE_COLUMN, overflow="fold")
    for entry, profile, runs, state in rows:
        question = [" ".join(entry.question.split()), f"(base: {entry.base})"]
        if width is not None:
            question = [_cut(line, width) for line in question]
        cells: list[str | Text] = [entry.id, entry.item, *([Text("\n".join(question))] if show_question else []),
                                   profile, runs, state]
        table.add_row(*cells)
    console.print(table)
    return EXIT_OK


MIN_QUESTION_WIDTH = 24


def _question_width(console_width: int, rows: list[tuple[Entry, str, str, str]]) -> int:
    """Characters left for the question column: the console's width less the other columns and the borders
    (seven bars, one space of padding on each side of six columns)."""
    widths = [max([len(header), *(len(str(cell)) for cell in cells)]) for header, cells in (
        ("entry", [e.id for e, *_ in rows]), ("item", [e.item for e, *_ in rows]),
        ("profile", [r[1] for r in rows]), ("runs", [r[2] for r in rows]), (STATE_COLUMN, [r[3] for r in rows]))]
    return console_width - sum(widths) - 7 - 12


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[:width - 3] + "..."


def _plan(entry: Entry, args: PlanOptions, allow_unresolved: bool, force: Optional[bool] = None) -> Plan:
    # Every reader sees the plan of the profile given, else of the entry's last `run`, racing as that run
    # did unless told; --force never reuses another entry's run (it would delete it).
    profile = plan_profile(entry, args.profile, args.runs_dir)
    forced = args.force if force is None else force
    return make_plan(entry, profile, args.runs_dir, allow_unresolved=allow_unresolved,
                     reuse=not forced, racing=_racing_choice(entry, profile, args))


def _forced(entry: Entry, args: PlanOptions, requested: list[Entry]) -> bool:
    """--force acts on the entries named on the command line only: a prerequisite's runs are deleted only
    when the user names that entry too."""
    return args.force and entry in requested


def _racing_choice(entry: Entry, profile: Optional[str], args: PlanOptions) -> Any:
    """What `run --race/--no-race/--race-setting` asks of ``entry``'s racing (None: as remembered or declared)."""
    choice, settings = args.race, args.race_setting or []
    if not settings:
        return choice
    if choice is False:
        raise UsageError("--race-setting needs a race; it cannot go with --no-race")
    base = resolve_racing(entry, profile or root_profile(entry), args.runs_dir, True)
    values = dict(base.model_dump() if base is not None else {})
    for setting in settings:
        key, eq, value = setting.partition("=")
        if not eq or key not in RaceSettings.model_fields:
            raise UsageError(f"--race-setting {setting!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(RaceSettings.model_fields)}")
        values[key] = yaml.safe_load(value) if value else None
    try:
        return RaceSettings.model_validate(values)
    except ValueError as exc:
        raise UsageError(f"--race-setting: {str(exc).splitlines()[-1].strip() if str(exc) else exc}") from None


def _print_stale(console: Any, plan: Plan, args: Folders) -> None:
    note = stale_note(stale_runs(plan, args.runs_dir))
    if note:
        console.print(f"  {note}", markup=False, highlight=False, soft_wrap=True)


def _print_plan(console: Any, plan: Plan, args: PlanOptions, title: str,
                force: Optional[bool] = None) -> None:
    entry = plan.entry
    console.print(
        f"[bold]{entry.id}[/bold] (item {entry.item}): {' '.join(entry.question.split())}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"  base: {plan.base.describe()}", markup=False, highlight=False, soft_wrap=True)
    why = " ".join(entry.base_reason.split()) if entry.base_reason else _default_reason(entry)
    console.print(f"  why this base: {why}", markup=False, highlight=False, soft_wrap=True)
    if entry.overrides:
        console.print(f"  overrides: {format_params(entry.overrides)}", markup=False, highlight=False, soft_wrap=True)
    if plan.base.unresolved:
        console.print(
            "  [yellow]the base is unresolved: the run names and configs below are provisional "
            "(built on the profile alone)[/yellow]"
        )
    table = Table(title=title)
    for column in ("run", "variant", "seed", "differences from the base", STATE_COLUMN, "action"):
        table.add_column(column, overflow="fold")
    for run in plan.runs:
        differences = {k: v for k, v in run.differences.items()}
        forced = args.force if force is None else force
        action = planned_action(run, args.retry_failed, forced)
        if run.reused_from:
            action_text = f"same as {run.reused_from}"
        else:
            action_text = str(action) if not run.provisional else "wait for the base"
        table.add_row(run.name, run.variant, str(run.seed), format_params(differences) or "-",
                      str(recorded_state(run.run_dir)), action_text)
    console.print(table)
    if plan.racing is not None and plan.runs and not plan.base.unresolved:
        say = _sayer(console)
        say(f"  {describe_racing(plan)}; of the runs above it trains only what it needs")
        step = race_step(plan)
        if not step.over:
            say(f"  next round: {describe_round(step.train, plan.runs[0].config.num_epochs)}")
    _print_stale(console, plan, args)
    console.print(
        f"  run directories: {args.runs_dir.absolute() / entry.id}", markup=False, highlight=False, soft_wrap=True
    )


def _default_reason(entry: Entry) -> str:
    if entry.best_of:
        return f"the question builds on whatever scored best in {entry.best_of}"
    if entry.variant_of:
        return f"a prescribed variant of {entry.variant_of[0]}, kept whichever variant won there"
    return "a first question: it starts from the profile"


def cmd_show(args: ShowOptions) -> int:
    console = make_console()
    entries = _entries(args, args.ids)
    for entry in _select(entries, args.ids):
        plan = _plan(entry, args, allow_unresolved=True)
        _print_plan(console, plan, args, title=f"{entry.id}: {len(plan.runs)} runs")
        if args.estimate and plan.runs:
            _print_estimate(console, plan, args.runs_dir)
    return EXIT_OK


def _print_estimate(console: Any, plan: Plan, runs_dir: Path) -> None:
    say = _sayer(console)
    guess = estimate(plan, runs_dir)
    say(f"  estimate: the full grid is {len(plan.runs)} runs, {guess.full_steps} optimizer steps, about "
        f"{guess.full_hours:.2f} device-hours on this machine (from {guess.rate_source})")
    if guess.race_steps is not None and guess.race_hours is not None:
        least, most = guess.race_steps
        say(f"  estimate: the race spends between {least} and {most} optimizer steps (about "
            f"{guess.race_hours[0]:.2f} to {guess.race_hours[1]:.2f} device-hours): every variant's first seeds to "
            "the first rung and the leader's to the end at least, every seed of every variant at most; on the "
            "recorded grids of BENCHMARKS.md ('Racing') a race that decided spent 34-43% of its full grid")
    used = spent(plan)
    if used.steps:
        say(f"  spent so far: {used.steps} optimizer steps, {used.device_hours:.2f} device-hours over {used.runs} runs")


def cmd_status(args: StatusOptions) -> int:
    console = make_console()
    entries = _entries(args, args.ids)
    selected = _select(entries, args.ids) if args.ids else list(entries.values())
    for entry in selected:
        plan = _plan(entry, args, allow_unresolved=True)
        table = Table(title=f"{entry.id} ({plan.base.profile} profile)")
        table.caption = " ".join(f"{run.variant} s{run.seed}: same as {run.reused_from}."
                                 for run in plan.runs if run.reused_from) or None
        for column in (
            "variant",
            "seed",
            STATE_COLUMN,
            "epoch",
            "best grader",
            "IoU",
            "SI-logRMSE",
            "elapsed",
            "ETA",
            "error",
        ):
            table.add_column(column, overflow="fold")
        # A raced entry plans every seed a race may use; the runs it has not started are not owed.
        for run in [r for r in plan.runs if plan.racing is None or has_started(r.run_dir)]:
            state = recorded_state(run.run_dir)
            try:
                status = read_status(run.run_dir)
                error = (status.pruned or status.error or "") if status else ""
            except RecordError as exc:  # named in the error column, the same words as every reader
                status, error = None, str(exc)
            shown, error = _state_shown(run, state, status, error)
            best = status.best if status else None
            epoch = f"{status.epoch}/{status.num_epochs or '?'}" if status else "-"
            table.add_row(
                run.variant, str(run.seed), shown, epoch, format_number(best.grader if best else None),
                format_number(best.iou if best else None), format_number(best.si_logrmse if best else None),
                format_duration(status.elapsed_s if status else None),
                format_duration(status.eta_s if status else None) if shown == str(RunState.RUNNING) else "-",
                error,
            )
        console.print(table)
        _print_stale(console, plan, args)
        if plan.runs and not plan.base.unresolved:
            _print_decision(console, plan)
        if plan.racing is not None and plan.runs and not plan.base.unresolved:
            step = race_step(plan)
            if not step.over:
                say = _sayer(console)
                say(f"  {describe_racing(plan)}")
                say(f"  next round: {describe_round(step.train, plan.runs[0].config.num_epochs)}")
        if plan.base.unresolved:
            console.print(
                f"  waiting for the base: {plan.base.unresolved}", markup=False, highlight=False, soft_wrap=True
            )
        if plan.entry.base_entry is not None and not plan.base.unresolved:
            console.print(f"  base: {plan.base.describe()}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def _state_shown(run: RunSpec, state: RunState, status: Optional[Status], error: str) -> tuple[str, str]:
    """The state and error `status` shows for a run: a running trainer that makes no progress is 'stalled' (and
    why); a finished run whose records do not check themselves says what run will do about it."""
    if state is RunState.RUNNING and status is not None:
        stall = stall_of(run.run_dir, status)
        return ("stalled", stall) if stall else (str(state), error)
    if state is RunState.FINISHED:
        action = finished_action(RunDirectory(run.run_dir))
        if action.kind is not ActionKind.SKIP:
            return str(state), f"{action.kind.value} by `run`: {action.detail}"
    return str(state), error


def cmd_run(args: RunOptions) -> int:
    console = make_console()
    entries = _entries(args, args.ids)
    if args.grid or args.set:
        requested = [adhoc_entry_from_args(args)]
        entries[requested[0].id] = requested[0]
    elif not args.ids:
        raise UsageError("name entry IDs to run, or an ad-hoc grid with --grid KEY=V1,V2 --name NAME")
    else:
        requested = _select(entries, args.ids)
    selected = requested if args.no_deps else with_prerequisites(requested, entries)
    if args.dataset_root is not None:  # for this command, as $MTL_DATASET_ROOT is for every command
        os.environ[DATASET_ROOT_ENV] = str(args.dataset_root.expanduser().absolute())
    if args.dry_run:
        for entry in selected:
            forced = _forced(entry, args, requested)
            plan = _plan(entry, args, allow_unresolved=True, force=forced)
            _print_plan(console, plan, args, title=f"{entry.id}: dry run, nothing is started", force=forced)
            if args.backend == "slurm":
                print_sbatch(console, plan, args)
        return EXIT_OK
    backend = make_backend(args)
    _preflight(selected, requested, args, backend, console)
    exit_code = EXIT_OK
    for entry in selected:
        forced = _forced(entry, args, requested)
        plan = _plan_waiting_for_base(entry, args, console, forced)
        if entry not in requested:
            needed_by = next(e.id for e in requested if entry in with_prerequisites([e], entries))
            done = all(recorded_state(run.run_dir) is RunState.FINISHED for run in plan.runs)
            console.print(f"{needed_by} needs {entry.id}: {'already trained' if done else 'training it first'}",
                          markup=False, highlight=False)
            if args.force and any(has_started(run.run_dir) for run in plan.runs):
                console.print(f"  --force does not reach {entry.id}: its runs are kept (name it too, "
                              f"`run {entry.id} {needed_by} --force`, to delete and train them again)",
                              markup=False, highlight=False, soft_wrap=True)
        remember_profile(args.runs_dir / entry.id, plan.base.profile)
        remember_racing(args.runs_dir / entry.id, plan.racing.model_dump() if plan.racing else None)
        runs = f"{len(plan.runs)} runs" if plan.racing is None else f"up to {len(plan.runs)} runs, raced"
        console.print(
            f"{entry.id}: {runs}; base: {plan.base.describe()}; runs in {args.runs_dir.absolute() / entry.id}",
            markup=False,
            highlight=False,
            soft_wrap=True,  # one line: the base can be a long sentence, and scripts grep it
        )
        for run in plan.runs:
            if run.reused_from:
                console.print(f"  {run.name}: same config as {run.reused_from} (finished): its records are used",
                              markup=False, highlight=False, soft_wrap=True)
        _print_stale(console, plan, args)
        scheduler = Scheduler(backend, Monitor(console), retry_failed=args.retry_failed, force=forced)
        say = _sayer(console)
        stopped = None
        if plan.racing is not None:
            say(f"{entry.id}: {describe_racing(plan)}")
            raced = race(plan, scheduler, say, budget=args.budget)
            outcomes, stopped = raced.outcomes, raced.stopped
        else:
            launches, left = within_budget(plan, args.budget)
            if left:
                stopped = f"{len(left)} run(s) left untrained: they would take the entry over --budget {args.budget}"
            outcomes = scheduler.run(launches)
        shown = [r for r in plan.runs if plan.racing is None or has_started(r.run_dir)]
        console.print(results_table(shown, title=f"{entry.id}: best-grader validation point of each run"))
        _print_decision(console, plan, stopped)
        for outcome in outcomes:
            if outcome.state not in (Outcome.FINISHED, Outcome.PAUSED):  # a pause at a rung is the race's plan
                console.print(
                    f"  {outcome.spec.name}: {outcome.state}: {outcome.message}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        # A skipped run (cannot run here, recorded with the reason) is not a failure: the winner is chosen
        # among the variants that ran, and the plan, status and report say so. Nor is a diverged one: too
        # high a learning rate diverging is an answer the lr bracket asks for, recorded and reported.
        if not all(o.state.has_result for o in outcomes):
            exit_code = EXIT_RUN_FAILED
        if scheduler.stop_signal is not None:
            console.print(f"stopped by {describe_signal(scheduler.stop_signal)}; run the same command again to resume")
            return 128 + scheduler.stop_signal
    return exit_code


def _preflight(selected: list[Entry], requested: list[Entry], args: RunOptions, backend: Any,
               console: Any) -> None:
    """Refuse a plan this machine cannot run before anything is written (mtl.ablate.preflight); say what a
    CPU plan will take when it is long, and which runs will be recorded as skipped."""
    if backend.name != "local":  # a cluster's nodes have their own devices and mounts
        return
    plans = [_plan(entry, args, allow_unresolved=True, force=_forced(entry, args, requested)) for entry in selected]
    found = preflight.check(plans, backend.slots(), args.runs_dir, args.retry_failed,
                            lambda plan: _forced(plan.entry, args, requested))
    ids = [entry.id for entry in requested]
    if found.problems:
        raise preflight.PlanRefused(preflight.refusal(found, ids, plans[-1].base.profile, args))
    say = _sayer(console)
    for note in found.notes:
        say(f"note: {note}")
    if found.estimate is not None and found.estimate.seconds > preflight.LONG_PLAN_S:
        say(f"{' '.join(ids)}: training on this machine's CPU, {found.estimate.describe()}; "
            f"`{command_from_args(args, 'run', ids)} --profile quick` is the CPU demo, and Ctrl-C stops with a "
            "checkpoint that the same command resumes")


def _sayer(console: Any) -> Callable[[str], None]:
    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    return say


def _print_decision(console: Any, plan: Plan, stopped: Optional[str] = None) -> None:
    """The entry's answer as its records stand (decided, undecided, by rule; a race not over) and its compute."""
    say = _sayer(console)
    try:
        decision = entry_decision(plan)
    except RecordError as exc:  # a run's records disagree: named, never decided around
        say(f"{plan.entry.id}: no decision while a run's records disagree: {exc}")
        decision = None
    if decision is not None:
        say(f"{plan.entry.id}: {decision.describe()}")
    elif plan.racing is not None:
        say(f"{plan.entry.id}: the race is not over{f' ({stopped})' if stopped else ''}; the same command goes on")
    elif stopped:
        say(f"{plan.entry.id}: {stopped}")
    used, full = spent(plan), full_grid_steps(plan)
    share = f" ({100 * used.steps / full:.0f}% of the full grid's {full})" if full else ""
    say(f"{plan.entry.id}: compute: {used.steps} optimizer steps{share}, {used.device_hours:.2f} device-hours "
        f"over {used.runs} runs")


def _plan_waiting_for_base(entry: Entry, args: RunOptions, console: Any, force: bool) -> Plan:
    try:
        return plan_when_base_settles(lambda: _plan(entry, args, allow_unresolved=False, force=force), args.runs_dir,
                                      lambda text: console.print(f"{entry.id}: {text}", markup=False, highlight=False))
    except UnresolvedBase as exc:
        hint = "" if not args.no_deps else " (without --no-deps, `run` trains it first)"
        raise UsageError(f"{entry.id}: its base ({entry.base}) cannot be resolved: {exc}{hint}") from None


def cmd_repair(args: RepairOptions) -> int:
    """Rebuild what finished runs lost (status, submission, best.pt after a kill) from what remains."""
    console = make_console()
    entries = _entries(args, args.ids)
    repaired = True
    for entry in _select(entries, args.ids) if args.ids else list(entries.values()):
        plan = _plan(entry, args, allow_unresolved=True)
        repaired &= repair_plan(plan, lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True))
    return EXIT_OK if repaired else EXIT_RUN_FAILED


def cmd_sweep(args: SweepOptions) -> int:
    from .sweep import MissingCredentials, agent_command, create_sweep, metric_note, sweep_config, write_sweep

    console = make_console()
    entries = _entries(args, [args.id])
    (entry,) = _select(entries, [args.id])
    try:
        # A sweep is the full grid whatever the entry races with (mtl.ablate.sweep): planned without racing.
        plan = make_plan(entry, plan_profile(entry, args.profile, args.runs_dir), args.runs_dir, racing=False)
    except UnresolvedBase as exc:
        raise UsageError(f"{entry.id}: its base cannot be resolved: {exc}") from None
    # The agents plan the entry again: from the same entries, and runs where `run` puts them.
    ablations_dir = None if args.ablations_dir == default_ablations_dir() else args.ablations_dir.absolute()
    config = sweep_config(plan, args.runs_dir, ablations_dir, args.project, args.entity)
    path = write_sweep(config, args.out or args.runs_dir / entry.id / "sweep-configs")
    say = _sayer(console)
    say(f"wrote {path}")
    note = metric_note(entry)
    if note:
        say(f"note: {note}")
    if args.create:
        try:
            sweep_id, entity = create_sweep(config)
        except MissingCredentials as exc:
            raise UsageError(str(exc)) from None
        say(f"created sweep {sweep_id}; start agents in this checkout with "
            f"`{agent_command(sweep_id, entity, config['project'])}`")
    else:
        say(f"register it by adding --create (or with `wandb sweep {path}`), then start agents in this checkout "
            f"with `{agent_command('ID', config.get('entity'), config['project'])}` (ID: the one wandb prints)")
    return EXIT_OK


def cmd_diff(args: DiffOptions) -> int:
    """What differs between two runs (config, code, environment, data); exit 0 the same, 1 different."""
    from . import rundiff

    a, b = (rundiff.load(rundiff.find_run(text, args.runs_dir)) for text in (args.run_a, args.run_b))
    report = rundiff.diff(a, b)
    say = _sayer(make_console())
    for line in rundiff.render(a, b, report):
        say(line)
    return EXIT_OK if report.same else EXIT_RUN_FAILED


def cmd_schema(args: SchemaOptions) -> int:
    sys.stdout.write(entry_json_schema_text())
    return EXIT_OK


# -------------------------------------------------------------------------------------------- parser


def build_parser(extra_commands: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    """The parser of the suite's subcommands; each of ``extra_commands`` adds more to its subparsers."""
    parser = SuggestingParser(
        prog="mtl-ablate",
        description="Plan, run, follow and export the ablation entries of ablations/ (one per assignment question).",
    )
    # The parents are SuggestingParsers like the subparsers that take them: argparse takes any parser there,
    # typeshed's add_parser only the subparsers' own class. (A parent lends its arguments; it never parses.)
    where = SuggestingParser(add_help=False)
    where.add_argument(
        "--ablations-dir",
        type=Path,
        default=default_ablations_dir(),
        help="folder of entries and profiles (default: $MTL_ABLATIONS_DIR or the repository's ablations/)",
    )
    where.add_argument("--runs-dir", type=Path, default=default_runs_dir(),
                       help="root of the run directories (default: $MTL_RUNS_DIR or ./runs)")
    profile = SuggestingParser(add_help=False)
    profile.add_argument("--profile", help="profile to use instead of the entry's base profile (quick, full, ...)")

    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = subparsers.add_parser("list", parents=[where], help="entries with their question and state")
    p.add_argument("--full", action="store_true", help="do not shorten the questions")
    p.set_defaults(func=cmd_list, options=ListOptions)

    p = subparsers.add_parser(
        "show", parents=[where, profile], help="the resolved runs of entries and their differences from the base"
    )
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--estimate", action="store_true",
                   help="also predict the optimizer steps and device-hours of the full grid (and of the race, with "
                   "--race or for a raced entry) on this machine, before anything runs")
    show_race = p.add_mutually_exclusive_group()
    show_race.add_argument("--race", dest="race", action="store_const", const=True, default=None,
                           help="show the entry as `run --race` would race it")
    show_race.add_argument("--no-race", dest="race", action="store_const", const=False,
                           help="show the entry as a full grid")
    p.set_defaults(func=cmd_show, options=ShowOptions)

    p = subparsers.add_parser(
        "run",
        parents=[where, profile],
        help="train the runs of entries (skips finished runs, resumes interrupted ones)",
    )
    p.add_argument("ids", nargs="*", metavar="ID")
    add_adhoc_arguments(p)
    p.add_argument("--devices", help="'cpu' or GPU indices such as 0,1 (default: every visible GPU, else the CPU)")
    p.add_argument("--jobs-per-device", type=int, default=1, help="runs sharing one device at a time (default 1)")
    p.add_argument("--fresh-interpreters", action="store_true",
                   help="start each training in a new Python interpreter (python -m mtl.cli) instead of forking it "
                   "from a server that imported torch once (seconds slower a run)")
    p.add_argument("--dry-run", action="store_true", help="show what would run, start nothing")
    p.add_argument("--dataset-root", type=Path, metavar="DIR",
                   help=f"the MiniScapes folder for profiles that train on it (default: ${DATASET_ROOT_ENV}, else "
                   "the profile's dataset_root); where the data lives, so it changes no run's identity")
    p.add_argument(
        "--force",
        action="store_true",
        help="delete the runs of the entries named (finished ones too) and train them again; the entries they "
        "build on keep their runs unless named too",
    )
    p.add_argument("--retry-failed", action="store_true", help="retry runs that failed or diverged earlier")
    racing = p.add_mutually_exclusive_group()
    racing.add_argument("--race", dest="race", action="store_const", const=True, default=None,
                        help="race the entries (and those they build on): variants train to rungs, the clearly "
                        "behind are pruned, seeds are added where they can change the answer (settings: the "
                        "entry's or profile's racing: section, else the defaults); remembered for every reader")
    racing.add_argument("--no-race", dest="race", action="store_const", const=False,
                        help="train every planned run in full, even where the entry or profile says to race")
    p.add_argument("--race-setting", action="append", metavar="KEY=VALUE",
                   help="a racing setting for this run (repeatable; remembered with the race): rungs=[0.25,0.5], "
                   "min_seeds=3, max_seeds=5, confidence=0.95, prune_confidence=0.95, budget_seeds=1.0")
    p.add_argument("--budget", type=int, metavar="STEPS",
                   help="cap each entry at this many optimizer steps (what it has trained counts): a race stops "
                   "before a round that would pass it, a grid trains the runs that fit, in plan order")
    deps = p.add_mutually_exclusive_group()
    deps.add_argument("--with-deps", action="store_true",
                      help="first train the entries that the bases depend on (the default; kept for old scripts)")
    deps.add_argument("--no-deps", action="store_true",
                      help="train only the given entries; refuse when a base they need has not run")
    p.add_argument(
        "--backend", choices=("local", "slurm"), default="local", help="local subprocesses or SLURM jobs via submitit"
    )
    add_slurm_arguments(p)
    p.set_defaults(func=cmd_run, options=RunOptions)

    p = subparsers.add_parser("repair", parents=[where, profile],
                              help="rebuild what finished runs lost (status, submission) from checkpoints and trace")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.set_defaults(func=cmd_repair, options=RepairOptions)

    p = subparsers.add_parser("status", parents=[where, profile], help="state, progress and best grader of each run")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.set_defaults(func=cmd_status, options=StatusOptions)

    p = subparsers.add_parser("sweep", parents=[where, profile],
                              help="write the W&B grid sweep of an entry (its runs as grid points)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--out", type=Path, help="folder for the sweep YAML file (default: <runs-dir>/<ID>/sweep-configs)")
    p.add_argument("--create", action="store_true", help="also register the sweep with W&B (needs credentials)")
    p.add_argument("--project",
                   help="W&B project of the sweep (default: the profile's wandb_project, $WANDB_PROJECT or mtl-ablate)")
    p.add_argument("--entity", help="W&B entity of the sweep (default: yours)")
    p.set_defaults(func=cmd_sweep, options=SweepOptions)

    p = subparsers.add_parser("diff", parents=[where],
                              help="what differs between two runs: config, code, environment, data (exit 1 when "
                              "they differ, as diff does)")
    p.add_argument("run_a", metavar="RUN_A", help="a run's folder, or ENTRY/RUN below --runs-dir")
    p.add_argument("run_b", metavar="RUN_B")
    p.set_defaults(func=cmd_diff, options=DiffOptions)

    p = subparsers.add_parser("schema", help="print the JSON Schema of the entry format")
    p.set_defaults(func=cmd_schema, options=SchemaOptions)

    for register in extra_commands:
        register(subparsers)
    return parser


def run(argv: Optional[list[str]] = None, extra_commands: Sequence[Callable[[Any], None]] = ()) -> int:
    """Parse ``argv`` and run the subcommand. Bad input (a path that should be a folder and is a file among
    it) is printed without a traceback (exit 2), and so is an error of the machine such as a full disk (exit
    1); a bug prints its traceback and the log file that keeps it (exit 1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(extra_commands)
    args = parser.parse_args(argv)
    try:
        options = args.options.from_namespace(args)
        problems = path_problems(options)
        try:
            stall_limit_s()  # read by status and run; a bad value is the user's to fix before anything runs
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise UsageError("; ".join(problems))
        return args.func(options)
    except (EntryError, UsageError, AdhocError) as exc:
        print(f"mtl-ablate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        said = describe_os_error(exc)
        if said is None:
            report_bug(argv, exc)
        else:
            print(f"mtl-ablate {args.command}: {said}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except Exception as exc:  # noqa: BLE001 - a bug: shown whole, and kept for the report
        report_bug(argv, exc)
        return EXIT_RUN_FAILED
