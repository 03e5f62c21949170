"""The program of an entry's W&B sweep: train the one planned run that a grid point names.

``python -m mtl.ablate.sweep_run --entry=ID --profile=P --runs_dir=R [--ablations_dir=A]
[--variant=NAME] --seed=N [--key=value ...]`` (the form ``wandb agent`` passes a point in).

It plans the entry as ``mtl-ablate run ID --profile P --runs-dir R`` does -- same base, same profile,
same ``best of`` winner -- and picks the run with that seed, that variant (when given) and every given
hyperparameter; so the run lands in the directory, and under the W&B group and job type, that
``mtl-ablate run`` gives it, and whichever of the two gets to a run first trains it (``mtl-train``
skips a finished run). The entry is planned as a full grid, never raced (``racing=False``), as the
sweep writer planned it. A point that matches no planned run (the entry or its base changed since the
sweep was written) is refused with the keys that differ. Run-invariant keys (device, workers, ...) may
be given and apply to this run only.

W&B: the sweep's run is the agent's (``$WANDB_RUN_ID``), and every point leaves it complete. A run it trains
or resumes is mirrored there (a run another W&B run mirrored before is carried on in it, whole history and
summary, mtl.train.tracking.wandb_identity); a point whose run had already finished, or that reuses another
entry's identical run, gets the finished run mirrored into it (mtl.train.mirror).

Stopping: the trainer runs as a child of this program. The agent stops a run -- its sweep's early
termination, a stop from the sweep, the agent shutting down -- with SIGTERM to this process alone (wandb's
``Agent._command_stop``, ``AgentProcess.terminate``); it becomes SIGUSR1 to the trainer, a stop that is
final for W&B: the run ends ``interrupted`` with its checkpoint (``mtl-ablate run`` or a later point
continues it) and is not marked preempting, so the sweep does not requeue it. A cluster's stop signal
reaches the trainer itself as well (SLURM signals every process of the job): that stop asks to be requeued,
as for any run (mtl.run.stopping).

Exit codes: ``mtl-train``'s, except 0 for a run stopped at the agent's request (the agent counts a non-zero
exit as a failed run and gives up after a few in a row); 2 also for a point that names no planned run or a
base that cannot be resolved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mtl.config import RUN_INVARIANT_KEYS, Config, ConfigError, cli_args, make_config, parse_cli_overrides
from mtl.run.layout import default_ablations_dir, remember_profile
from mtl.run.model import ExitCode, RunState
from mtl.run.records import recorded_state

from .entry import EntryError, load_entries, select_entries
from .planner import Plan, RunSpec, UnresolvedBase, make_plan

PROG = "mtl-ablate sweep run"
# The program's own keys (where the run is planned, and which variant); the rest are config keys.
PLACE_KEYS = ("entry", "profile", "variant", "runs_dir", "ablations_dir")
# Keys the plan decides for each run (its directory, its W&B grouping), or the agent (its W&B run id).
PLANNED_KEYS = ("log_dir", "wandb_group", "wandb_job_type", "wandb_tags", "wandb_run_id")


class SweepPointError(Exception):
    """A sweep point that cannot be trained; the message says why and what to do."""


def split_arguments(argv: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """(place keys, config keys) of ``--key=value`` / ``--key value`` arguments."""
    place: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        key, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if key.replace("-", "_") in PLACE_KEYS:
            if not eq:
                if i + 1 >= len(argv):
                    raise SweepPointError(f"--{key} has no value")
                value, i = argv[i + 1], i + 1
            place[key.replace("-", "_")] = value
        else:
            rest.append(token)
        i += 1
    try:
        config_values = parse_cli_overrides(rest)
    except ConfigError as exc:
        raise SweepPointError(str(exc)) from None
    planned = sorted(set(config_values) & set(PLANNED_KEYS))
    if planned:
        raise SweepPointError(f"{', '.join(planned)} cannot be given: the plan sets them for each run "
                              "(and the W&B run id comes from $WANDB_RUN_ID)")
    return place, config_values


def _differences(spec: RunSpec, given: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Given hyperparameter -> (given value, planned value), for those that differ from ``spec``'s config."""
    candidate = make_config({**spec.config.model_dump(), **given}, source="sweep parameters").hyperparameters()
    planned = spec.config.hyperparameters()
    return {k: (candidate[k], planned[k]) for k in given if k in planned and candidate[k] != planned[k]}


def select_run(plan: Plan, variant: Optional[str], given: dict[str, Any], rewrite_hint: str) -> RunSpec:
    """The planned run with ``variant`` (if given) whose config has every given hyperparameter value."""
    entry_id = plan.entry.id
    specs = plan.runs
    if variant is not None:
        specs = [spec for spec in specs if spec.variant == variant]
        if not specs:
            names = list(dict.fromkeys(spec.variant for spec in plan.runs))
            raise SweepPointError(f"entry {entry_id} has no variant {variant!r} (its variants: {', '.join(names)}); "
                                  f"{rewrite_hint}")
    hyperparameters = {k: v for k, v in given.items() if k not in RUN_INVARIANT_KEYS}
    differences = [(spec, _differences(spec, hyperparameters)) for spec in specs]
    matches = [spec for spec, diff in differences if not diff]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise SweepPointError(f"the point names {len(matches)} runs of {entry_id} "
                              f"({', '.join(s.name for s in matches)}): give --seed and --variant or the grid keys")
    closest, diff = min(differences, key=lambda item: len(item[1]))
    listed = "; ".join(f"{k}: sweep {a!r}, plan {b!r}" for k, (a, b) in diff.items())
    raise SweepPointError(f"the point matches no planned run of {entry_id}; closest is {closest.name}, which "
                          f"differs in {listed}. The entry or its base changed since the sweep was written: "
                          f"{rewrite_hint}")


@dataclass
class SweepPoint:
    spec: RunSpec  # the planned run the point names
    config: Config  # the config to train it with: the plan's, with the agent's W&B run id
    profile: str  # the profile the entry was planned with
    entry_dir: Path  # <runs>/<entry id>


def point_config(argv: list[str], environ: Optional[dict[str, str]] = None) -> SweepPoint:
    """The planned run a sweep point names, and the config to train it with."""
    environ = dict(os.environ if environ is None else environ)
    place, given = split_arguments(argv)
    missing = [k for k in ("entry", "runs_dir") if k not in place] + (["seed"] if "seed" not in given else [])
    if missing:
        raise SweepPointError(f"missing {', '.join('--' + k for k in missing)} (see the sweep's parameters)")
    ablations_dir = Path(place.get("ablations_dir") or default_ablations_dir())
    entries = load_entries(ablations_dir)
    try:
        (entry,) = select_entries(entries, [place["entry"]])
    except ValueError as exc:
        raise SweepPointError(f"{exc} (in {ablations_dir})") from None
    profile = place.get("profile")
    plan = make_plan(entry, profile, place["runs_dir"], racing=False)  # a sweep is a grid (mtl.ablate.sweep)
    hint = (f"write the sweep again with `mtl-ablate sweep {entry.id}"
            f"{' --profile ' + profile if profile else ''} --runs-dir {place['runs_dir']}`")
    spec = select_run(plan, place.get("variant"), given, hint)
    invariant = {k: v for k, v in given.items() if k in RUN_INVARIANT_KEYS}
    run_id = environ.get("WANDB_RUN_ID") or spec.config.wandb_run_id
    config = make_config({**spec.config.model_dump(), **invariant, "wandb_run_id": run_id}, source="sweep parameters")
    return SweepPoint(spec, config, plan.base.profile, Path(place["runs_dir"]) / entry.id)


class Trainer:
    """``mtl-train`` for one point, as a child process; a stop signal to this process (the agent's) reaches it
    as SIGUSR1, the stop its sweep asked for."""

    def __init__(self, config: Config):
        self.config = config
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.stopped_by_agent = False

    def run(self) -> int:
        command = [sys.executable, "-m", "mtl.cli", *cli_args(self.config)]
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._stop) for signum in handled}
        # SLURM's time-limit warning reaches the trainer itself; here it must not end this process first.
        previous[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
            code = self.process.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.stopped_by_agent and code == ExitCode.STOPPED:
            return ExitCode.FINISHED  # stopped as asked, checkpoint kept: no failure for the agent to count
        return code if code >= 0 else 128 - code

    def _stop(self, signum: int, _frame: Any = None) -> None:
        self.stopped_by_agent = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)


def mirror_point(point: SweepPoint) -> None:
    """The agent's W&B run of a point whose run had finished before: the finished run mirrored into it."""
    from mtl.run.errors import RunLocked
    from mtl.train.mirror import mirror_finished

    if point.config.wandb_run_id is None:  # not launched by an agent: no sweep run to fill
        return
    try:
        mirrored = mirror_finished(point.config, point.spec.run_dir)
    except RunLocked:
        print(f"{PROG}: {point.spec.run_dir} is in use by another process; its W&B run "
              f"{point.config.wandb_run_id} was not filled", file=sys.stderr, flush=True)
        return
    if mirrored:
        print(f"{PROG}: the finished run is mirrored into W&B run {mirrored}", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        point = point_config(argv)
    except UnresolvedBase as exc:
        print(f"{PROG}: the base of the entry cannot be resolved: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    except (SweepPointError, EntryError, ConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    spec = point.spec
    print(f"{PROG}: {spec.entry_id} variant {spec.variant!r} seed {spec.seed} -> {spec.run_dir}", flush=True)
    if spec.reused_from:
        print(f"{PROG}: same config as {spec.reused_from}, which finished: its records are used", flush=True)
    # As `run` does: readers given no --profile plan the entry with the profile its runs were started with.
    remember_profile(point.entry_dir, point.profile)
    # The same command line `mtl-ablate run` gives mtl-train for this run, with the agent's run id.
    code = Trainer(point.config).run()
    if code == ExitCode.FINISHED and recorded_state(spec.run_dir) is RunState.FINISHED:
        mirror_point(point)
    return code


if __name__ == "__main__":
    sys.exit(main())
