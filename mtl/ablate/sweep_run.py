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
be given and apply to this run only; the W&B run id is the agent's (``$WANDB_RUN_ID``).

Exit codes: ``mtl-train``'s; 2 also for a point that names no planned run or a base that cannot be
resolved.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mtl.config import RUN_INVARIANT_KEYS, Config, ConfigError, cli_args, make_config, parse_cli_overrides
from mtl.run.layout import default_ablations_dir, remember_profile
from mtl.run.model import ExitCode

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
    from mtl.cli import main as train

    # The same command line `mtl-ablate run` gives mtl-train for this run, with the agent's run id.
    return train(cli_args(point.config))


if __name__ == "__main__":
    sys.exit(main())
