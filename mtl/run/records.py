"""The one reader of a run's records (status, config, trace), shared by the trainer, the suite and the reports.

A damaged file is named the same way everywhere (``<path>: line 7 is not valid JSON``, ``<path>: field
'best.step': ...``) and never silently changes a result; only a torn final line of the trace (a write cut
short by a kill) is ignored (:mod:`mtl.run.trace`). A recorded best point must be one of the trace's
validation points: if the status says otherwise, the records disagree and the reader says so rather than
picking one.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import yaml
from pydantic import ValidationError

from mtl.run.best import best_point
from mtl.run.errors import RecordError
from mtl.run.layout import RunDirectory, lock_held
from mtl.run.model import GRADER_KEY, Environments, RunState, Status, ValidationPoint
from mtl.run.trace import Line, read_validation_lines

# libyaml's loader parses the same documents as SafeLoader about 25 times faster; it matters with
# thousands of runs. PyYAML built without libyaml still gives the same result.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
REPAIR_HINT = "`mtl-ablate repair` rebuilds it from the checkpoints"
# A config.yaml is a flat mapping of a hundred keys: a bound far above that keeps a copied or hostile run
# folder from exhausting the machine (no alias is expanded, nesting is shallow, the file is small).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 8


def model_error(path: Path, exc: ValidationError) -> RecordError:
    """A RecordError naming the file and the first field that does not fit the model."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return RecordError(f"{path}: field {where!r}: {error['msg']}")


# ------------------------------------------------------------------------------------------ status
def parse_status(text: str, path: Path) -> Status:
    """``status.json``'s text as a Status; RecordError naming the file when it is empty, not JSON, not an
    object or does not fit the model (the status is written atomically, so any of these is damage)."""
    if not text.strip():
        raise RecordError(f"{path}: is empty (damaged; {REPAIR_HINT})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: is not valid JSON ({exc.msg} at line {exc.lineno}); damaged, "
                          f"{REPAIR_HINT}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        return Status.model_validate(data)
    except ValidationError as exc:
        raise model_error(path, exc) from None


def read_status(run_dir: Path) -> Optional[Status]:
    """The run's status; None when it has none yet; RecordError naming the file when it is damaged."""
    path = RunDirectory(run_dir).status_path
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_status(text, path)


def recorded_state(run_dir: Path) -> RunState:
    """The run's state as a reader sees it: its status's, NOT_STARTED without one, UNKNOWN for a damaged one,
    STOPPED for a status that says running while its trainer is gone (:func:`trainer_gone`)."""
    try:
        status = read_status(run_dir)
    except RecordError:
        return RunState.UNKNOWN
    if status is None:
        return RunState.NOT_STARTED
    if status.state is RunState.RUNNING and trainer_gone(run_dir, status):
        return RunState.STOPPED
    return status.state


def error_of(run_dir: Path) -> str:
    """The error a run's status records ("" when none, or when the status is absent or damaged)."""
    try:
        status = read_status(run_dir)
    except RecordError as exc:
        return str(exc)
    return (status.error or "") if status is not None else ""


def trainer_gone(run_dir: Path, status: Status) -> bool:
    """Whether the trainer a "running" status names is gone: its pid no longer exists on this host, or
    nobody holds the run's lock (a trainer holds it for its whole life, on any host sharing the folder).
    A folder whose lock cannot be tried (read-only) is judged by the pid alone."""
    if status.pid is not None and status.host == socket.gethostname():
        try:
            os.kill(status.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by someone else
            pass
    try:
        return not lock_held(run_dir)
    except OSError:
        return False


# A running trainer that records no progress for this long is stalled ($MTL_STALL_AFTER_S sets it): longer
# than any quiet stretch of a healthy run (a validation or a test prediction on a CPU takes minutes).
STALL_ENV = "MTL_STALL_AFTER_S"
DEFAULT_STALL_AFTER_S = 900.0
# A trainer process stopped by a signal (SIGSTOP, Ctrl-Z) is stalled once quiet for this long (or the limit).
STOPPED_AFTER_S = 30.0


def stall_limit_s() -> float:
    """Seconds without a progress record after which a running trainer counts as stalled."""
    raw = os.environ.get(STALL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_STALL_AFTER_S
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"environment variable {STALL_ENV}={raw!r}: expected a positive number of seconds")
    return value


def last_record_at(status: Status) -> Optional[float]:
    """When the trainer last wrote its status (a progress record or any other change), as time.time()."""
    times = [status.progress.at] if status.progress is not None else []
    if status.updated_at:
        try:
            times.append(datetime.fromisoformat(status.updated_at).timestamp())
        except ValueError:
            pass  # a status written by other code: its progress record alone decides
    return max(times) if times else None


def process_stopped(pid: int) -> bool:
    """Whether process ``pid`` of this host is stopped by a signal (state T or t in /proc; False elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] in ("T", "t")


def stall_of(run_dir: Path, status: Status, now: Optional[float] = None) -> Optional[str]:
    """Why the live trainer of a "running" status counts as stalled -- no progress recorded for the stall
    limit, or stopped by a signal and quiet -- with what to do; None while it progresses (or is gone:
    :func:`trainer_gone` says stopped then)."""
    if status.state is not RunState.RUNNING or trainer_gone(run_dir, status):
        return None
    last = last_record_at(status)
    if last is None:
        return None
    quiet, limit = (now if now is not None else time.time()) - last, stall_limit_s()
    here = status.pid is not None and status.host == socket.gethostname()
    stopped = here and status.pid is not None and process_stopped(status.pid)
    if quiet < limit and not (stopped and quiet >= min(limit, STOPPED_AFTER_S)):
        return None
    who = f"pid {status.pid} on {status.host}" if status.pid is not None else "its trainer"
    if stopped:
        todo = f"{who} is stopped by a signal (SIGSTOP or Ctrl-Z): `kill -CONT {status.pid}` resumes it"
    else:
        todo = (f"{who} is alive but records nothing: stop it (`kill {status.pid}` checkpoints) and run the same "
                "command again to resume")
    return f"no progress recorded for {_duration(quiet)} (stalled after {_duration(limit)}, ${STALL_ENV}); {todo}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def is_finished(run_dir: Path) -> bool:
    """Finished means a finished status and a packed submission."""
    return recorded_state(run_dir) is RunState.FINISHED and RunDirectory(run_dir).submission.exists()


# ------------------------------------------------------------------------------------------ environment
MAX_ENVIRONMENT_BYTES = 4 << 20  # a bounded diff and a few hundred package lines: far under this


def read_environment(run_dir: Path) -> Optional[Environments]:
    """What the run's attempts trained with (environment.json); None for a run that recorded none (older
    runs); RecordError naming the file when it is damaged."""
    path = RunDirectory(run_dir).environment
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_ENVIRONMENT_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_ENVIRONMENT_BYTES:
        raise RecordError(f"{path}: is larger than {MAX_ENVIRONMENT_BYTES >> 20} MiB")
    try:
        return Environments.model_validate_json(data)
    except ValidationError as exc:
        raise model_error(path, exc) from None


# ------------------------------------------------------------------------------------------ config
def read_config(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's resolved config as parsed YAML; None when it has none; RecordError naming the file when it
    does not parse or is not a mapping."""
    path = RunDirectory(run_dir).config_path
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        text = data.decode()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise RecordError(f"{path}: is larger than {MAX_CONFIG_BYTES // 1024} KiB (a run's config is a few KiB)")
    try:
        config = copy.deepcopy(_parsed_config(text))
    except (yaml.YAMLError, ValueError) as exc:
        raise RecordError(f"{path}: is not valid YAML ({str(exc)[:400]})") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise RecordError(f"{path}: expected a mapping of config keys, got {type(config).__name__}")
    problem = config_hash_problem(run_dir, config, read_status(run_dir))
    if problem:
        raise RecordError(problem)
    return config


FORK_HINT = ("A run's records are not edited. To train the changed config, copy the file elsewhere and train it "
             "as a new run (`mtl-train --config COPY --log_dir NEW_FOLDER`, or put the change in the entry's "
             "overrides or grid, which plans it as a run of its own); to keep this run, undo the change "
             "(source.zip's cmd.txt lists the hyperparameters it trained with)")


def config_hash_problem(run_dir: Path, config: dict[str, Any], status: Optional[Status]) -> Optional[str]:
    """Why ``config`` (the run's config.yaml, parsed) is not the config its status says the run trained with:
    it does not hash to the status's ``config_hash``; None when it does, or when the status records none."""
    if status is None or status.config_hash is None:
        return None
    from mtl.config import ConfigError, make_config  # (here: the reader of a status alone needs no schema)

    run = RunDirectory(run_dir)
    try:
        actual = make_config(config, source=str(run.config_path)).config_hash()
    except ConfigError as exc:
        return (f"{run.config_path}: is no longer a valid config ({str(exc)[:300]}), but {run.status_path} records "
                f"the run trained with config_hash {status.config_hash}. {FORK_HINT}")
    if actual == status.config_hash:
        return None
    return (f"{run.config_path}: its hyperparameters hash to {actual}, but {run.status_path} records config_hash "
            f"{status.config_hash}, the config the run trained with: the file was changed after the run started. "
            f"{FORK_HINT}")


@functools.lru_cache(maxsize=1024)
def _parsed_config(text: str) -> Any:
    """Parsed once per content: planning the registry reads each run's config again for every entry that
    looks at the run (2,000 parses of a few dozen files). Refusals raise and are not cached."""
    _check_shape(text)
    return yaml.load(text, Loader=YAML_LOADER)


def _check_shape(text: str) -> None:
    """Refuse aliases and deep nesting before anything is built: libyaml's event stream is cheap to scan."""
    depth = 0
    for event in yaml.parse(text, Loader=YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("it uses a YAML alias, which a run's config never holds")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ValueError(f"it nests more than {MAX_CONFIG_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


# ------------------------------------------------------------------------------------------ trace
def steps_and_graders(lines: Iterable[Line]) -> Iterator[tuple[Any, Any]]:
    """(step, grader) of each validation line, what :func:`check_best_in_trace` compares."""
    return ((line.get("step"), line.get(GRADER_KEY)) for line in lines)


def check_best_in_trace(run_dir: Path, best: Optional[ValidationPoint], points: Iterable[tuple[Any, Any]],
                        source: Optional[Path] = None) -> None:
    """A recorded best point (of the status, or of ``source`` such as best.pt) must be a validation point of
    the trace with the same grader; RecordError naming both files otherwise. ``points``: (step, grader) of
    each validation point (:func:`steps_and_graders` of the trace's lines, or a summary's columns)."""
    if best is None:
        return
    if any(step == best.step and _same_metric(grader, best.grader) for step, grader in points):
        return
    run = RunDirectory(run_dir)
    raise RecordError(f"{run.metrics}: holds no validation point at step {best.step} with grader {best.grader}, "
                      f"the best point recorded in {source or run.status_path}; the records disagree "
                      "(a damaged or replaced trace)")


def _same_metric(recorded: Any, best: float) -> bool:
    """Whether a trace's grader is the best point's: equal, or both undefined (a single-task run logs none;
    its best point holds NaN)."""
    if recorded is None or (isinstance(recorded, float) and math.isnan(recorded)):
        return math.isnan(best)
    return bool(recorded == best)


@dataclass
class RunRecord:
    """A run's config, status and validation lines, read and checked together."""

    path: Path
    config: dict[str, Any]
    status: Optional[Status]
    points: list[Line] = field(default_factory=list)  # the trace's validation lines

    @property
    def state(self) -> RunState:
        return self.status.state if self.status is not None else RunState.NOT_STARTED

    def best(self, key: str = GRADER_KEY, mode: str = "max") -> Optional[Line]:
        """The best validation line by the rule (:mod:`mtl.run.best`)."""
        return best_point(self.points, key, mode)


def read_record(run_dir: Path) -> RunRecord:
    """A run's config, status and validation lines, validated (RecordError naming the damaged file and line);
    the status's best point must be one of the trace's validation points."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    points = read_validation_lines(RunDirectory(run_dir).metrics)
    check_best_in_trace(run_dir, status.best if status else None, steps_and_graders(points))
    return RunRecord(path=run_dir, config=read_config(run_dir) or {}, status=status, points=points)
