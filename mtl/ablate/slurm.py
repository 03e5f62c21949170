"""SLURM through submitit: one job array per entry, requeued at the time limit, never submitted twice.

What hydra-submitit-launcher users expect: partition/account/qos/constraint/mem/time/gpus/cpus, setup
lines and extra ``#SBATCH`` parameters from flags or a profile's ``slurm:`` section, an array capped
by ``--slurm-array-parallelism``, ``--dry-run`` printing the sbatch script. Each job runs the same
``mtl-train`` command as the local backend, through :class:`TrainingJob`.

Stopping, as SLURM does it:

- time limit: SLURM's warning (SIGUSR2, ``--signal=USR2@<lead>``) reaches submitit, which calls
  :meth:`TrainingJob.checkpoint`: the trainer checkpoints, the job requeues itself (``scontrol requeue``)
  and the run resumes where it stopped;
- preemption and ``scancel``: SIGTERM to every process of the job (submitit only logs it: its handler is
  ``bypass``). The trainer checkpoints and ends ``interrupted``; the job then ends without a result, so
  what the cluster does decides: jobs go out with ``--requeue`` (unless ``requeue: false``), and a cluster
  with PreemptMode=REQUEUE queues a preempted job again, whose run resumes; otherwise (a cancel, or
  PreemptMode=CANCEL) the job ends CANCELLED or PREEMPTED and the next ``run`` resumes the run. The stop
  signal reaches wandb's service too (its own session is in the job's cgroup); the trainer's W&B mirror
  then records the run's end in offline files under a fresh service (mtl.train.tracking).

The job id of every submission is recorded in the run directory. A job's state comes from ``sacct`` and,
where accounting is off or has not caught up, from ``squeue`` (:class:`SlurmStates`): a run whose recorded
job is still queued or running is followed, not submitted again; one whose job ended (COMPLETED, FAILED,
CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, ...) is started again as its records say; and
when neither command can say, nothing is submitted twice: ``run`` stops and says so. No ``--wckey``
unless asked (``wckey``): clusters that enforce wckeys reject submitit's default one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

from mtl.run.layout import RunDirectory
from mtl.run.model import ExitCode, RunState
from mtl.run.records import recorded_state
from mtl.run.status import now_iso
from mtl.run.stopping import describe_signal
from mtl.run.trace import read_lines

from .arguments import UsageError
from .backends import Job, Launch, Placement, child_environment, train_command
from .entry import PROFILE_SLURM_SECTION, profile_path
from .options import RunOptions

# Lead time of SLURM's warning signal before the time limit. The trainer stops at the next step
# boundary, and only after a validation pass it is in: the worst case is a step (0.03-0.7 s, see
# BENCHMARKS.md) plus a whole validation pass of the val split (tens of seconds on a GPU), plus last.pt
# with the optimizer state (~0.4 GB for ResNet-34 DeepLabV3+ with Adam: seconds on a shared file
# system), plus W&B marking the run preempted. 180 s covers that three times over, and SLURM may send
# the signal up to 60 s earlier still; it costs 3 minutes of a 12-hour allocation.
SIGNAL_LEAD_S = 180
# How many time limits one run may reach (each requeues it); preemptions do not count.
MAX_TIMEOUTS = 10
# Job states (sacct's and squeue's words) of a job that is still going to run or running: a second `run`
# follows it. PREEMPTED is not one: it is the end of a job the cluster did not requeue (a requeued one is
# PENDING again, as REQUEUED on its way there).
LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "STOPPED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESV_DEL_HOLD", "SIGNALING", "STAGE_OUT")
# States of a job that ended; ENDED: squeue no longer knows it (the controller forgets jobs MinJobAge after).
ENDED_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "REVOKED", "ENDED")
# Seconds between two state queries of one job array (one sacct or squeue call answers for all its tasks).
STATE_POLL_S = 15.0
# How long after SLURM says a job ended its result file may still appear (a shared filesystem shows it late);
# submitit's own wait, but spent without blocking the scheduler.
RESULT_GRACE_S = 15.0


class SlurmConfigError(ValueError):
    """A bad SLURM option in a flag or a profile; the message names where."""


@dataclass
class SlurmOptions:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    timeout_min: int = 720
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: Optional[float] = None
    array_parallelism: Optional[int] = None  # submitit's default: 256 tasks of an array at once
    signal_delay_s: int = SIGNAL_LEAD_S
    setup: list[str] = field(default_factory=list)  # shell lines run before the job, e.g. module load
    additional_parameters: dict[str, str] = field(default_factory=dict)  # any other #SBATCH --key=value
    # --requeue: a cluster that requeues preempted jobs (PreemptMode=REQUEUE) or jobs of a failed node may
    # requeue ours; the run resumes from its checkpoint.
    requeue: bool = True
    wckey: Optional[str] = None  # --wckey, only when given (submitit's default "submitit" is dropped)
    # Seconds between two sacct/squeue queries of a job array: how soon `run` sees a job the cluster stopped.
    poll_s: float = STATE_POLL_S

    def checked(self, where: str) -> SlurmOptions:
        for name in ("timeout_min", "cpus_per_task", "signal_delay_s"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SlurmConfigError(f"{where}: {name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise SlurmConfigError(f"{where}: gpus_per_node must be 0 (a CPU job) or more, got {self.gpus_per_node!r}")
        if self.array_parallelism is not None and (not isinstance(self.array_parallelism, int)
                                                   or self.array_parallelism < 1):
            raise SlurmConfigError(f"{where}: array_parallelism must be a positive integer, "
                                   f"got {self.array_parallelism!r}")
        if self.mem_gb is not None and (isinstance(self.mem_gb, bool) or not isinstance(self.mem_gb, (int, float))
                                        or self.mem_gb <= 0):
            raise SlurmConfigError(f"{where}: mem_gb must be a positive number, got {self.mem_gb!r}")
        if self.signal_delay_s * 2 > self.timeout_min * 60:
            raise SlurmConfigError(f"{where}: signal_delay_s {self.signal_delay_s} leaves less than half of the "
                                   f"{self.timeout_min}-minute time limit for training")
        if not isinstance(self.setup, list) or not all(isinstance(line, str) for line in self.setup):
            raise SlurmConfigError(f"{where}: setup must be a list of shell lines, got {self.setup!r}")
        if not isinstance(self.additional_parameters, dict):
            raise SlurmConfigError(f"{where}: additional_parameters must be a mapping of sbatch options, "
                                   f"got {self.additional_parameters!r}")
        if not isinstance(self.requeue, bool):
            raise SlurmConfigError(f"{where}: requeue must be true or false, got {self.requeue!r}")
        if self.wckey is not None and (not isinstance(self.wckey, str) or not self.wckey.strip()):
            raise SlurmConfigError(f"{where}: wckey must be a non-empty name, got {self.wckey!r}")
        if isinstance(self.poll_s, bool) or not isinstance(self.poll_s, (int, float)) or not self.poll_s >= 0.5:
            raise SlurmConfigError(f"{where}: poll_s must be a number of seconds, at least 0.5, got {self.poll_s!r}")
        return self

    def executor_parameters(self, job_name: str) -> dict[str, Any]:
        """submitit AutoExecutor parameters (its shared names, and ``slurm_`` ones for the rest)."""
        parameters: dict[str, Any] = {
            "name": job_name, "timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_task,
            "slurm_signal_delay_s": self.signal_delay_s,
        }
        if self.gpus_per_node:  # a CPU job asks for no GPU at all, not for --gpus-per-node=0
            parameters["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            parameters["mem_gb"] = self.mem_gb
        for name in ("partition", "account", "qos", "constraint", "array_parallelism"):
            if getattr(self, name) is not None:
                parameters[f"slurm_{name}"] = getattr(self, name)
        if self.setup:
            parameters["slurm_setup"] = list(self.setup)
        if self.wckey is not None:  # else none at all: see SubmititBackend._parameters
            parameters["slurm_wckey"] = self.wckey
        additional: dict[str, Any] = {str(k): str(v) for k, v in self.additional_parameters.items()}
        if self.requeue:
            additional.setdefault("requeue", True)  # a bare `#SBATCH --requeue`
        if additional:
            parameters["slurm_additional_parameters"] = additional
        return parameters


OPTION_NAMES = tuple(f.name for f in fields(SlurmOptions))
PROFILE_SECTION = PROFILE_SLURM_SECTION


def options_from_mapping(values: Any, where: str, base: Optional[SlurmOptions] = None) -> SlurmOptions:
    """``base`` updated with the keys of a profile's ``slurm:`` mapping; unknown keys are errors."""
    if not isinstance(values, dict):
        raise SlurmConfigError(f"{where}: expected a mapping of SLURM options ({', '.join(OPTION_NAMES)}), "
                               f"got {type(values).__name__}")
    unknown = sorted(set(values) - set(OPTION_NAMES))
    if unknown:
        raise SlurmConfigError(f"{where}: unknown SLURM option(s) {', '.join(map(str, unknown))}; "
                               f"expected some of {', '.join(OPTION_NAMES)}")
    current = {f.name: getattr(base or SlurmOptions(), f.name) for f in fields(SlurmOptions)}
    return SlurmOptions(**{**current, **values}).checked(where)


# ---------------------------------------------------------------------------------------------- flags
def add_slurm_arguments(parser: Any) -> None:
    """The ``--slurm-*`` options of ``mtl-ablate run`` (a flag wins over the profile's ``slurm:`` section)."""
    group = parser.add_argument_group("SLURM (--backend slurm)")
    group.add_argument("--slurm-profile", metavar="NAME",
                       help="take SLURM options from the 'slurm:' section of profile NAME (default: --profile's)")
    group.add_argument("--slurm-partition", dest="slurm_partition", metavar="NAME")
    group.add_argument("--slurm-account", dest="slurm_account", metavar="NAME")
    group.add_argument("--slurm-qos", dest="slurm_qos", metavar="NAME")
    group.add_argument("--slurm-constraint", dest="slurm_constraint", metavar="FEATURES")
    group.add_argument("--slurm-timeout-min", dest="slurm_timeout_min", type=int, metavar="MINUTES",
                       help="time limit (default 720)")
    group.add_argument("--slurm-gpus", dest="slurm_gpus_per_node", type=int, metavar="N",
                       help="GPUs per job (default 1; 0: a CPU job)")
    group.add_argument("--slurm-cpus", dest="slurm_cpus_per_task", type=int, metavar="N",
                       help="CPUs per job (default 8)")
    group.add_argument("--slurm-mem-gb", dest="slurm_mem_gb", type=float, metavar="GB", help="memory per job in GB")
    group.add_argument("--slurm-array-parallelism", dest="slurm_array_parallelism", type=int, metavar="N",
                       help="most tasks of an entry's job array running at once")
    group.add_argument("--slurm-signal-delay-s", dest="slurm_signal_delay_s", type=int, metavar="SECONDS",
                       help=f"seconds between the time-limit signal and the limit (default {SIGNAL_LEAD_S})")
    group.add_argument("--slurm-setup", dest="slurm_setup", action="append", metavar="LINE",
                       help="a shell line run before the job (repeatable), e.g. 'module load cuda'")
    group.add_argument("--slurm-additional", dest="slurm_additional_parameters", action="append",
                       metavar="KEY=VALUE", help="any other sbatch option (repeatable), e.g. mail-type=END")
    group.add_argument("--slurm-no-requeue", dest="slurm_requeue", action="store_false", default=None,
                       help="submit without --requeue (the cluster then never requeues a preempted job; the next "
                       "`run` resumes it)")
    group.add_argument("--slurm-wckey", dest="slurm_wckey", metavar="NAME",
                       help="a wckey for the jobs (default: none)")
    group.add_argument("--slurm-poll-s", dest="slurm_poll_s", type=float, metavar="SECONDS",
                       help=f"seconds between two sacct/squeue queries of an entry's jobs (default {STATE_POLL_S:g})")


def options_from_args(args: RunOptions, ablations_dir: Path) -> SlurmOptions:
    """Defaults, then the ``slurm:`` section of profile ``--slurm-profile`` (else of ``--profile``, when
    it has one), then the ``--slurm-*`` flags."""
    from mtl.config import ConfigError, load_yaml

    options = SlurmOptions()
    name = args.slurm_profile or args.profile
    if name:
        path = profile_path(ablations_dir, name, key="--slurm-profile" if args.slurm_profile else "--profile")
        try:
            section = load_yaml(path, extra_keys=(PROFILE_SECTION,)).get(PROFILE_SECTION)
        except ConfigError as exc:
            raise SlurmConfigError(str(exc)) from None
        if section is None and args.slurm_profile:
            raise SlurmConfigError(f"{path}: no '{PROFILE_SECTION}:' section (--slurm-profile {name})")
        if section is not None:
            options = options_from_mapping(section, f"{path}: {PROFILE_SECTION}", options)
    flags: dict[str, Any] = {name: args.slurm.get(name) for name in OPTION_NAMES}
    flags = {k: v for k, v in flags.items() if v is not None}
    if "additional_parameters" in flags:
        extra = dict(options.additional_parameters)
        for item in flags["additional_parameters"]:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise SlurmConfigError(f"--slurm-additional {item!r}: expected KEY=VALUE, e.g. mail-type=END")
            extra[key.strip()] = value
        flags["additional_parameters"] = extra
    if "setup" in flags:
        flags["setup"] = [*options.setup, *flags["setup"]]
    return options_from_mapping(flags, "--slurm-* flags", options)


# ---------------------------------------------------------------------------------------------- job records
@dataclass(frozen=True)
class SlurmJobRecord:
    """One submission of a run to SLURM: its job id (``N`` or ``N_i`` in an array) and submitit's folder."""

    job_id: str
    folder: str
    submitted_at: str = ""


def record_slurm_job(run_dir: Path, record: SlurmJobRecord) -> None:
    """Append a submission to the run's job list (the run directory is created if need be)."""
    path = RunDirectory(run_dir).slurm_jobs
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"job_id": record.job_id, "folder": record.folder,
                       "submitted_at": record.submitted_at or now_iso()})
    with open(path, "a") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_slurm_jobs(run_dir: Path) -> list[SlurmJobRecord]:
    """The run's SLURM submissions, oldest first ([] when it was never submitted)."""
    return [SlurmJobRecord(str(p["job_id"]), str(p["folder"]), str(p.get("submitted_at", "")))
            for p in read_lines(RunDirectory(run_dir).slurm_jobs) if "job_id" in p and "folder" in p]


# ---------------------------------------------------------------------------------------------- job states
class SlurmStateUnknown(UsageError):
    """Neither sacct nor squeue can say whether a recorded job still runs: submitting it again could train
    the run twice at once."""


def _main_id(job_id: str) -> str:
    return job_id.split("_")[0]


def _query(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _first_word(state: str) -> str:
    return state.split()[0].upper() if state.strip() else ""  # "CANCELLED by 1234" -> CANCELLED


class SlurmStates:
    """Job states from ``sacct`` (accounting), else ``squeue`` (the controller), one query per job array and
    at most every ``interval_s`` seconds. sacct's lines (array ranges such as ``123_[4-7%2]``, the ``.batch``,
    ``.extern`` and step lines) are read by submitit's own parser."""

    def __init__(self, interval_s: float = STATE_POLL_S):
        self.interval_s = interval_s
        self._asked: dict[str, tuple[float, dict[str, str], str]] = {}  # array id -> (when, states, why none)

    def state(self, job_id: str, fresh: bool = False) -> str | None:
        """The job's state in SLURM's words (ENDED: squeue no longer knows it); None when nothing answers
        (:meth:`why_unknown` says what each command said)."""
        main = _main_id(job_id)
        asked = self._asked.get(main)
        if fresh or asked is None or time.monotonic() - asked[0] >= self.interval_s:
            states, why = self._ask(main)
            asked = self._asked[main] = (time.monotonic(), states, why)
        return asked[1].get(job_id) or asked[1].get(main)

    def why_unknown(self, job_id: str) -> str:
        asked = self._asked.get(_main_id(job_id))
        return asked[2] if asked else "not asked"

    def _ask(self, main: str) -> tuple[dict[str, str], str]:
        from submitit.slurm.slurm import SlurmInfoWatcher

        states: dict[str, str] = {}
        sacct = _query(["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", main])
        if sacct is not None and sacct.returncode == 0:
            info = SlurmInfoWatcher().read_info(sacct.stdout)
            states = {k: _first_word(v.get("State", "")) for k, v in info.items()}
        squeue = _query(["squeue", "--noheader", "--format=%i %T", f"--jobs={main}"])
        if squeue is not None and squeue.returncode == 0:
            from submitit.slurm.slurm import read_job_id

            for line in squeue.stdout.splitlines():
                job, _, state = line.strip().partition(" ")
                for parts in read_job_id(job) if job else []:
                    ids = ["_".join(parts[:2])] if len(parts) < 3 else [
                        f"{parts[0]}_{i}" for i in range(int(parts[1]), int(parts[2]) + 1)]
                    for key in ids:
                        states.setdefault(key, _first_word(state))  # accounting, where it answers, first
        elif squeue is not None and "invalid job id" in squeue.stderr.lower():
            states.setdefault(main, "ENDED")  # the controller forgot it: it ended a while ago
        why = "; ".join(f"{name}: {_said(result)}" for name, result in (("sacct", sacct), ("squeue", squeue)))
        return states, why


def _said(result: subprocess.CompletedProcess[str] | None) -> str:
    if result is None:
        return "did not answer"
    text = (result.stderr or result.stdout).strip().splitlines()
    return f"exit {result.returncode}" + (f", {text[-1]}" if text else "")


# ---------------------------------------------------------------------------------------------- the job
def _exit_code_without_reaping(pid: int, wait_s: float) -> Optional[int]:
    """The exit code of child ``pid`` once it ended, waiting up to ``wait_s``; None if it still runs.
    Leaves the child to be reaped by the ``Popen.wait`` this runs inside of (a signal handler)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:  # already reaped
            return None
        if info is not None and info.si_pid == pid:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


class TrainingJob:
    """Body of a submitit job: run one ``mtl-train`` command, return its exit code.

    Checkpointable: submitit calls :meth:`checkpoint` on SLURM's time-limit warning (SIGUSR2); the trainer
    checkpoints (it gets the signal too, forwarded here to be sure), and the job requeues itself with this
    same run, which resumes from that checkpoint. SIGTERM (preemption, ``scancel``) is forwarded too; the job
    then ends without a result (SystemExit, which submitit does not record), so the cluster's state of the
    job says what follows: requeued by the cluster, or ended and resumed by the next ``run``."""

    def __init__(self, command: list[str], env_updates: dict[str, str], log_path: str, stop_within_s: float):
        self.command, self.env_updates, self.log_path = list(command), dict(env_updates), log_path
        self.stop_within_s = stop_within_s
        self._process: Optional[subprocess.Popen] = None
        self._terminated = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_process": None, "_terminated": False}

    def __call__(self) -> int:
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(self.command, env=child_environment(self.env_updates), stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            # scancel and preemption send SIGTERM (submitit's own handler only logs it); forward it, should
            # it reach this process only.
            previous = signal.signal(signal.SIGTERM, self._forward)
            try:
                code = self._process.wait()
            finally:
                signal.signal(signal.SIGTERM, previous)
        if self._terminated:
            with open(self.log_path, "a") as text:
                text.write(f"mtl-ablate: {describe_signal(signal.SIGTERM)} reached the job; trainer exit {code}; "
                           "the job ends without a result: the cluster requeues it or the next `run` resumes it\n")
            raise SystemExit(code)  # not an Exception: submitit writes no result for it
        return code

    def _forward(self, signum: int, _frame: Any = None) -> None:
        self._terminated = self._terminated or signum == signal.SIGTERM
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signum)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Let the trainer checkpoint and stop, then hand submitit this same run to requeue; None (no
        requeue) when the trainer ended otherwise than stopped or finished (its status says why)."""
        from submitit.helpers import DelayedSubmission

        process = self._process
        if process is not None and process.returncode is None:
            self._forward(signal.SIGUSR2)
            code = _exit_code_without_reaping(process.pid, self.stop_within_s)
        else:
            code = None if process is None else process.returncode
        with open(self.log_path, "a") as log:
            log.write(f"mtl-ablate: {describe_signal(signal.SIGUSR2)} reached the job; trainer exit "
                      f"{'still running' if code is None else code}; "
                      f"{'requeued' if code in (None, 0, 143) else 'not requeued'}\n")
        if code is not None and code not in (0, 143):
            return None
        return DelayedSubmission(self, *args, **kwargs)


class SubmititJob:
    """One submitted run as the scheduler sees it: poll, terminate (scancel), describe.

    It ended when submitit has its result, or when SLURM says it ended (``states``): a job stopped by
    SIGTERM, killed for its memory or its time, or lost with its node leaves no result, and the run's
    records (``run_dir``) then say how it stands."""

    def __init__(self, job: Any, adopted: bool = False, run_dir: Optional[Path] = None,
                 states: Optional[SlurmStates] = None, result_grace_s: float = RESULT_GRACE_S):
        self.job = job
        self.adopted = adopted
        self.run_dir, self.states = run_dir, states
        self.result_grace_s = result_grace_s
        self._code: Optional[int] = None
        self._ended_at: Optional[float] = None

    def poll(self) -> Optional[int]:
        if self._code is not None:
            return self._code
        ended = self.job.done() or (self.states is not None and self.states.state(self.job.job_id) in ENDED_STATES)
        if not ended or not self._result_settled():
            return None
        self.job._results_timeout_s = 0  # submitit would wait, blocking, for the file _result_settled waited for
        try:
            self._code = int(self.job.result())
        except Exception as exc:  # noqa: BLE001 - no result: stopped, killed or lost; the records say where the run is
            self._code = self._without_result(exc)
        return self._code

    def _result_settled(self) -> bool:
        """Whether the ended job's result can be read now: its file is there, the run's records say the trainer
        stopped (a stopped job writes none), or RESULT_GRACE_S went by since the job was seen ended."""
        if self.job.paths.result_pickle.exists():
            return True
        if self.run_dir is not None and recorded_state(self.run_dir) is RunState.INTERRUPTED:
            return True
        now = time.monotonic()
        self._ended_at = self._ended_at if self._ended_at is not None else now
        return now - self._ended_at >= self.result_grace_s

    def _without_result(self, exc: Exception) -> int:
        """The exit code a job that left no result stands for: the run's recorded end (interrupted with a
        checkpoint: 143; finished: 0), else a failure that names SLURM's state of the job."""
        recorded = recorded_state(self.run_dir) if self.run_dir is not None else None
        if recorded is RunState.INTERRUPTED:
            return ExitCode.STOPPED
        if recorded is RunState.FINISHED:
            return ExitCode.FINISHED
        lines = str(exc).strip().splitlines()
        error = lines[-1] if lines else type(exc).__name__
        state = self.states.state(self.job.job_id) if self.states is not None else None
        if state:
            error = f"SLURM ended job {self.job.job_id} {state}: {error}"
        self.error = error  # a string: the scheduler's message
        return ExitCode.FAILED

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        self.job.cancel(check=False)  # SLURM signals the job itself

    def describe(self) -> str:
        return f"job {self.job.job_id}" + (" (queued earlier)" if self.adopted else "")

    def sentinel(self) -> None:
        return None  # only sacct/squeue and submitit's result file tell that a job ended


def job_name(entry_id: str, run_names: list[str]) -> str:
    """``mtl:<entry>:<run>`` for one run; an array carries one name for all its tasks: ``mtl:<entry>``."""
    return f"mtl:{entry_id}:{run_names[0]}" if len(run_names) == 1 else f"mtl:{entry_id}"


class SubmititBackend:
    """Submits runs as SLURM jobs through ``submitit.AutoExecutor``; all runs started together (one
    entry's) go out as one job array.

    ``cluster="slurm"`` needs ``sbatch``; ``"local"`` is submitit's own executor on this machine."""

    name = "slurm"
    queues = True  # an entry's runs go out as one job array; SLURM runs them as the cluster allows

    def __init__(self, folder: Path, options: SlurmOptions, cluster: str = "slurm"):
        import submitit

        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise RuntimeError("--backend slurm needs SLURM's sbatch on PATH; it was not found on this machine")
        self.folder, self.options, self.cluster = Path(folder), options, cluster
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster, slurm_max_num_timeout=MAX_TIMEOUTS)
        self.states = SlurmStates(options.poll_s) if cluster == "slurm" else None
        gpu = options.gpus_per_node and cluster == "slurm"
        self.placement = Placement("0" if gpu else "cpu", options.cpus_per_task)

    def slots(self) -> list[Placement]:
        return [self.placement]

    def _job(self, launch: Launch) -> TrainingJob:
        config = launch.config.replace(**launch.placement.config_updates())
        env = launch.placement.env_updates()
        if launch.placement.device != "cpu":
            env.pop("CUDA_VISIBLE_DEVICES")  # SLURM assigns the job's GPU itself
        return TrainingJob(train_command(config), env, str(launch.log_path), max(10, self.options.signal_delay_s - 30))

    def _parameters(self, name: str) -> dict[str, Any]:
        if self.cluster == "slurm":
            return self.options.executor_parameters(name)
        return {"timeout_min": self.options.timeout_min}

    def start_many(self, launches: Sequence[Launch], entry_id: str = "") -> list[Job]:
        """Submit the runs as one job array (a single run as a plain job); record each job id in its run."""
        runs = [Path(launch.config.log_dir) for launch in launches]
        self.executor.update_parameters(**self._parameters(job_name(entry_id or runs[0].parent.name,
                                                                     [r.name for r in runs])))
        if self.cluster == "slurm" and self.options.wckey is None:
            # AutoExecutor drops None ("handle None as not set"), so submitit's default wckey would stay; its
            # SLURM executor takes None as no --wckey line.
            self.executor._executor.update_parameters(wckey=None)
        jobs = self.executor.submit_array([self._job(launch) for launch in launches])
        for run_dir, job in zip(runs, jobs):
            if self.cluster == "slurm":
                record_slurm_job(run_dir, SlurmJobRecord(str(job.job_id), str(self.folder.absolute())))
        return [SubmititJob(job, run_dir=run_dir, states=self.states) for run_dir, job in zip(runs, jobs)]

    def adopt(self, run_dir: Path) -> Optional[Job]:
        """The run's last recorded job when SLURM still has it queued or running; None when it ended (the
        run's records decide what follows). SlurmStateUnknown when neither sacct nor squeue can say."""
        if self.cluster != "slurm" or self.states is None:
            return None
        records = read_slurm_jobs(run_dir)
        if not records:
            return None
        from submitit.slurm.slurm import SlurmJob

        job: SlurmJob[Any] = SlurmJob(folder=records[-1].folder, job_id=records[-1].job_id)
        state = self.states.state(job.job_id, fresh=True)
        if state is None or (state not in LIVE_STATES and state not in ENDED_STATES):
            raise SlurmStateUnknown(
                f"cannot tell whether job {job.job_id} of {run_dir} is still queued or running "
                f"({state or self.states.why_unknown(job.job_id)}); not submitting it again. Check with "
                f"`squeue -j {_main_id(job.job_id)}` or `sacct -j {_main_id(job.job_id)}`, then run again")
        return SubmititJob(job, adopted=True, run_dir=run_dir, states=self.states) if state in LIVE_STATES else None



def sbatch_script(options: SlurmOptions, folder: Path, entry_id: str, run_names: list[str]) -> str:
    """The sbatch script submitit writes for ``run_names`` (an array when several), without submitting and
    without SLURM installed: submitit's own script writer, given the AutoExecutor parameters in SLURM's
    names and the command line its SlurmExecutor runs."""
    from submitit.slurm.slurm import _convert_mem as convert_mem
    from submitit.slurm.slurm import _make_sbatch_string as make

    native: dict[str, Any] = {}
    generic = {"name": "job_name", "timeout_min": "time", "cpus_per_task": "cpus_per_task",
               "gpus_per_node": "gpus_per_node"}
    for key, value in options.executor_parameters(job_name(entry_id, run_names)).items():
        if key == "mem_gb":
            native["mem"] = convert_mem(value)
        elif key in generic:
            native[generic[key]] = value
        else:
            native[key[len("slurm_"):]] = value
    native.setdefault("wckey", None)  # as the backend submits: no --wckey unless asked
    folder = Path(folder).absolute()
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return make(command=command, folder=folder, map_count=len(run_names) if len(run_names) > 1 else None, **native)
