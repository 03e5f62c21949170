"""What ``run`` checks before it starts anything (docs/DESIGN.md §10): that this machine can run the plan,
and what the plan costs here when it trains on the CPU.

For every run the plan will train: its dataset folder is where its config says (MiniScapes: a folder with
train/, val/ and test/), the GPUs ``--devices`` names exist, and the ImageNet weights a variant needs are in
torch hub's cache or may be downloaded. A missing dataset or device refuses the whole command before a
single run directory is written, saying what is missing, where it was looked for and the ways forward:
point at the data (``--dataset-root`` or $MTL_DATASET_ROOT), train the embedded synthetic data with
``--profile quick``, or train on a GPU, with what the plan would take on this CPU. Weights that cannot be had
are said, not refused: that variant is recorded as skipped with the reason (docs/DESIGN.md §7) and the
entries after it go on.

The estimate of a CPU plan: each run's optimizer steps to go x its batch x the pixels of its training crop, at
this machine's recorded speed for its model (training seconds per pixel of an image-step over the finished runs
of the same model below the runs folder, validation included); with none recorded, at the speed of one
forward and backward pass of the model timed here (training only). The models are fully convolutional, so
their cost grows with the pixels of the crop.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from mtl.config import Config
from mtl.run.errors import RecordError
from mtl.run.layout import DATASET_ROOT_ENV, find_run_dirs
from mtl.run.model import RunState
from mtl.run.records import read_config, read_status

from .arguments import UsageError, command_line
from .backends import Placement
from .compute import planned_steps
from .options import PlanOptions
from .planner import Plan, RunSpec
from .scheduler import ActionKind, planned_action

# A CPU plan longer than this is said before it starts (a GPU profile meeting a CPU); shorter ones start quietly.
LONG_PLAN_S = 3600.0
# Config keys that shape the model (and so its FLOPs); runs that agree on them share one count.
_MODEL_KEY_PREFIXES = ("model_", "dilation_", "aspp", "decoder_", "distillation_")


class PlanRefused(UsageError):
    """This machine cannot run the plan; the message says what is missing and the ways forward."""


@dataclass(frozen=True)
class Estimate:
    seconds: float
    runs: int
    steps: int
    how: str  # where the rate came from, in words

    def describe(self) -> str:
        return (f"about {format_long_duration(self.seconds)} for {self.runs} run{'s' if self.runs != 1 else ''} "
                f"({self.steps:,} optimizer steps; {self.how})")


def format_long_duration(seconds: float) -> str:
    """``3 days 4 h``, ``5 h 20 min`` or ``12 min``."""
    minutes = max(1, round(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''} {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


# ------------------------------------------------------------------------------------------ what is checked
def runs_to_train(plans: Sequence[Plan], retry_failed: bool, forced: Callable[[Plan], bool]) -> list[RunSpec]:
    """The runs the plans will start (each once): not finished, failed without --retry-failed, locked by
    another process or refused."""
    found: dict[Path, RunSpec] = {}
    for plan in plans:
        for run in plan.runs:
            action = planned_action(run, retry_failed, forced(plan))
            if action.kind not in (ActionKind.SKIP, ActionKind.LOCKED, ActionKind.REFUSE):
                found.setdefault(run.run_dir, run)
    return list(found.values())


def dataset_problems(runs: Sequence[RunSpec]) -> list[str]:
    """Each distinct reason a run's dataset folder is not there, with how many runs it stops."""
    from mtl.data import dataset_problem  # (lazy: torch)

    problems: dict[str, int] = {}
    for run in runs:
        problem = dataset_problem(run.config)
        if problem:
            problems[problem] = problems.get(problem, 0) + 1
    return [f"{problem} ({count} run{'s' if count != 1 else ''})" for problem, count in problems.items()]


def device_problems(slots: Sequence[Placement]) -> list[str]:
    """The GPUs ``--devices`` names that this machine does not have."""
    gpus = sorted({slot.device for slot in slots if slot.device != "cpu"}, key=int)
    if not gpus:
        return []
    import torch

    count = torch.cuda.device_count()
    missing = [gpu for gpu in gpus if int(gpu) >= count]
    if not missing:
        return []
    build = "" if torch.version.cuda else f" (torch {torch.__version__} is built without CUDA)"
    return [f"--devices names GPU {', '.join(missing)}, but this machine has {count} CUDA device(s){build}"]


def weights_notes(runs: Sequence[RunSpec]) -> list[str]:
    """The runs that need ImageNet weights this machine lacks: recorded as skipped with the reason (or, where
    downloads are allowed, downloaded when they start)."""
    from mtl.models.encoder import imagenet_weights_source, offline  # (lazy: torch)

    notes: dict[str, list[str]] = {}
    for run in runs:
        config = run.config
        if not config.pretrained:
            continue
        if config.pretrained_weights_path:
            path = Path(config.pretrained_weights_path).expanduser()
            if not path.is_file():
                note = f"pretrained_weights_path {str(path)!r} does not exist: recorded as skipped"
                notes.setdefault(note, []).append(_label(run))
            continue
        path, url = imagenet_weights_source(config.pretrained_weights_url)
        if path.is_file():
            continue
        try:
            is_offline = offline()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        note = (f"the ImageNet weights are not at {str(path)!r} and MTL_OFFLINE is set: recorded as skipped (put "
                f"the file from {url} there to train them)" if is_offline else
                f"the ImageNet weights will be downloaded from {url} to {str(path)!r} when they start")
        notes.setdefault(note, []).append(_label(run))
    return [f"{', '.join(labels)}: {note}" for note, labels in notes.items()]


def _label(run: RunSpec) -> str:
    return f"{run.entry_id} {run.variant} s{run.seed}"


# ------------------------------------------------------------------------------------------ the estimate
# Training cost grows with the pixels of a crop (the models are fully convolutional): speeds are kept per
# pixel of an image-step, and a pass is timed on a crop of at most this side, then scaled.
TIMED_CROP = 128


def _shape(config: Config) -> tuple[tuple[str, str], ...]:
    """The config keys that shape the model: runs that agree on them cost the same per pixel."""
    return tuple(sorted((k, str(v)) for k, v in config.model_dump().items() if k.startswith(_MODEL_KEY_PREFIXES)))


def recorded_speeds(runs_dir: Path) -> dict[tuple[tuple[str, str], ...], list[float]]:
    """Model shape -> training seconds per pixel of an image-step (validation included) of each finished run
    below ``runs_dir``."""
    from mtl.config import ConfigError, make_config

    speeds: dict[tuple[tuple[str, str], ...], list[float]] = {}
    if not Path(runs_dir).is_dir():
        return speeds
    for run_dir in find_run_dirs(runs_dir):
        try:
            status = read_status(run_dir)
            config = make_config(read_config(run_dir) or {})
        except (RecordError, ConfigError):
            continue
        if status is None or status.state is not RunState.FINISHED or not status.step or not status.elapsed_s:
            continue
        pixels = status.step * config.batch_size * config.aug_input_crop_size ** 2
        speeds.setdefault(_shape(config), []).append(status.elapsed_s / pixels)
    return speeds


def timed_speed(config: Config, threads: int) -> float:
    """Seconds per pixel of one forward and backward pass of ``config``'s model on a batch-1 crop (of at most
    TIMED_CROP a side), timed here on ``threads`` CPU threads."""
    import torch

    from mtl.models import build_model  # (lazy: torch)

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_model(config.replace(pretrained=False)).train()
            side = min(config.aug_input_crop_size, TIMED_CROP)
            started = time.perf_counter()
            outputs = model(torch.zeros(1, 3, side, side))
            sum(out.float().mean() for out in outputs.values()).backward()
            return (time.perf_counter() - started) / side ** 2
    finally:
        torch.set_num_threads(previous)


def estimate(runs: Sequence[RunSpec], threads: int, runs_dir: Path) -> Optional[Estimate]:
    """What training ``runs`` one at a time on this machine's CPU takes (see the module docstring); None
    for no runs."""
    if not runs:
        return None
    recorded = recorded_speeds(runs_dir)
    timed: dict[tuple[tuple[str, str], ...], float] = {}
    seconds, steps, from_records = 0.0, 0, 0
    for run in runs:
        shape = _shape(run.config)
        if shape in recorded:
            speed, from_records = statistics.median(recorded[shape]), from_records + 1
        else:
            speed = timed.get(shape) or timed.setdefault(shape, timed_speed(run.config, threads))
        run_steps = planned_steps([run])
        seconds += run_steps * run.config.batch_size * run.config.aug_input_crop_size ** 2 * speed
        steps += run_steps
    sources = []
    if from_records:
        count = sum(len(recorded[shape]) for shape in {_shape(r.config) for r in runs} if shape in recorded)
        sources.append(f"at the speed of {count} finished run{'s' if count != 1 else ''} of the same model "
                       f"recorded in {runs_dir}")
    if timed:
        sources.append(f"from a forward and backward pass of each model timed here on {threads} "
                       f"thread{'s' if threads != 1 else ''}, scaled to the crop; training alone, validation "
                       "adds to it")
    return Estimate(seconds, len(runs), steps, "; ".join(sources))


# ------------------------------------------------------------------------------------------ the check
@dataclass
class Check:
    """What the pre-flight found: problems that stop the plan, notes, and the CPU estimate (when on the CPU)."""

    problems: list[str]
    notes: list[str]
    estimate: Optional[Estimate]
    on_cpu: bool


def check(plans: Sequence[Plan], slots: Sequence[Placement], runs_dir: Path, retry_failed: bool,
          forced: Callable[[Plan], bool]) -> Check:
    runs = runs_to_train(plans, retry_failed, forced)
    problems = device_problems(slots) + dataset_problems(runs)
    notes = weights_notes(runs)
    on_cpu = all(slot.device == "cpu" for slot in slots)
    threads = slots[0].threads if slots else 1
    return Check(problems, notes, estimate(runs, threads, runs_dir) if on_cpu else None, on_cpu)


def refusal(found: Check, ids: Sequence[str], profile: str, args: PlanOptions) -> str:
    """The message of a plan this machine cannot run: what is missing, then the ways forward."""
    def run_command(profile: Optional[str], extra: Sequence[str] = ()) -> str:
        return command_line("run", ids, profile=profile, runs_dir=args.runs_dir, ablations_dir=args.ablations_dir,
                            extra=extra)

    lines = [f"cannot run {' '.join(ids)} here under profile {profile}; nothing was started:"]
    lines += [f"  {problem}" for problem in found.problems]
    ways = []
    if any("dataset_root" in problem for problem in found.problems):
        ways.append("get MiniScapes (README.md, Data: train/, val/ and test/, each with rgb/, semseg/ and depth/) "
                    "and point at it: "
                    f"`{run_command(args.profile, ('--dataset-root', 'DIR'))}`, "
                    f"or set {DATASET_ROOT_ENV}=DIR for every command")
        ways.append("train on the embedded synthetic dataset instead (no download, a CPU demo in minutes): "
                    f"`{run_command('quick')}`")
    if any("--devices" in problem for problem in found.problems):
        on_cpu = run_command(args.profile, ("--devices", "cpu"))
        ways.append(f"train on the CPU: `{on_cpu}`")
    if found.on_cpu and found.estimate is not None:
        ways.append(f"train profile {profile} on a machine with a GPU: this one has none, and on its CPU the plan "
                    f"would take {found.estimate.describe()}")
    lines.append("Ways forward:" if len(ways) > 1 else "Way forward:")
    lines += [f"  {number}. {way}" for number, way in enumerate(ways, 1)]
    return "\n".join(lines)
