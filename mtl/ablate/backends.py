"""Where an ``mtl-train`` command runs: a local subprocess on one device here, or a SLURM job through
submitit (``mtl.ablate.slurm``).

Both backends run the very same command line (``python -m mtl.cli --key=value ...``); a backend only
decides the process environment (which GPU, how many CPU threads) and how the process is started,
watched and stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from mtl.config import Config, cli_args
from mtl.run.layout import REPO_ROOT


def train_command(config: Config) -> list[str]:
    """The ``mtl-train`` command for ``config`` (works without the console script on PATH)."""
    return [sys.executable, "-m", "mtl.cli", *cli_args(config)]


def child_environment(updates: dict[str, str]) -> dict[str, str]:
    """The environment of a training process: ours, the repository importable, plus ``updates``."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(updates)
    return env


@dataclass(frozen=True)
class Placement:
    """One device slot: the config keys and environment variables that pin a run to it."""

    device: str  # "cpu" or a GPU index such as "0"
    threads: int

    def config_updates(self) -> dict[str, Any]:
        return {"device": "cpu" if self.device == "cpu" else "cuda", "num_threads": self.threads}

    def env_updates(self) -> dict[str, str]:
        threads = str(self.threads)
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        # The child sees exactly one GPU (as cuda:0), or none for a CPU run.
        env["CUDA_VISIBLE_DEVICES"] = "" if self.device == "cpu" else self.device
        return env

    def describe(self) -> str:
        return f"cpu x{self.threads} threads" if self.device == "cpu" else f"gpu {self.device}"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_devices(text: Optional[str]) -> list[str]:
    """``cpu`` or a comma list of GPU indices; None picks every visible GPU, else the CPU."""
    if text is None:
        import torch

        count = torch.cuda.device_count()
        return [str(i) for i in range(count)] if count else ["cpu"]
    devices = [part.strip() for part in text.split(",") if part.strip()]
    if not devices:
        raise ValueError(f"--devices {text!r}: expected 'cpu' or GPU indices such as 0,1")
    for device in devices:
        if device != "cpu" and not device.isdigit():
            raise ValueError(f"--devices {text!r}: {device!r} is neither 'cpu' nor a GPU index")
    if "cpu" in devices and len(devices) > 1:
        raise ValueError(f"--devices {text!r}: use either 'cpu' or GPU indices, not both")
    if len(set(devices)) != len(devices):
        raise ValueError(f"--devices {text!r}: a device is listed twice")
    return devices


def placements(devices: list[str], jobs_per_device: int, cpus: Optional[int] = None) -> list[Placement]:
    """One slot per concurrent run; the CPU cores are split evenly between all concurrent runs."""
    if jobs_per_device < 1:
        raise ValueError(f"--jobs-per-device must be at least 1, got {jobs_per_device}")
    slots = len(devices) * jobs_per_device
    threads = max(1, (cpus or available_cpus()) // slots)
    return [Placement(device, threads) for device in devices for _ in range(jobs_per_device)]


class Job(Protocol):
    def poll(self) -> Optional[int]:
        """The exit code once the command ended, else None."""

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        """Ask the command to stop with ``signum`` (it checkpoints and exits 143)."""

    def describe(self) -> str: ...

    def sentinel(self) -> Optional[int]:
        """A file descriptor that becomes readable when the command ends, so that the scheduler wakes at the
        end instead of at its next poll; None where only polling tells (a SLURM job)."""


@dataclass(frozen=True)
class Launch:
    """One run to start: its config, the slot it runs on and the file its console output is appended to."""

    config: Config
    placement: Placement
    log_path: Path


class Backend(Protocol):
    """Where the scheduler starts runs (:mod:`mtl.ablate.scheduler`).

    ``queues``: the backend takes every run at once and queues them itself (SLURM: one job array, capped
    by its array parallelism); otherwise the scheduler keeps at most one run on each of ``slots``."""

    name: str
    queues: bool

    def slots(self) -> list[Placement]:
        """The device slots runs take turns on (with ``queues``: the one placement every job gets)."""

    def start_many(self, launches: Sequence[Launch], entry_id: str) -> list[Job]:
        """Start the runs (in one submission where the backend can); one job per launch, in order."""

    def adopt(self, run_dir: Path) -> Optional[Job]:
        """A job started earlier for this run that is still queued or running (followed, not started
        again), or None."""


class LocalJob:
    def __init__(self, command: list[str], env: dict[str, str], log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            # Same process group as mtl-ablate: killing the group (Ctrl-C, SIGKILL) reaches the training too.
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._pidfd = _pidfd(self.process.pid)

    def poll(self) -> Optional[int]:
        code = self.process.poll()
        if code is not None and self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return code

    def sentinel(self) -> Optional[int]:
        return self._pidfd

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def describe(self) -> str:
        return f"pid {self.process.pid}"


def _pidfd(pid: int) -> Optional[int]:
    """A pidfd of our child ``pid`` (readable once it exits; Linux 5.3 and later), else None: the scheduler
    then notices the end at its next poll."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class LocalBackend:
    """Runs each command as a child process pinned to one device slot: forked from a server that imported
    torch once (``fork``, :mod:`mtl.ablate.forkserver`), else a new interpreter."""

    name = "local"
    queues = False

    def __init__(self, slots: list[Placement], fork: bool = False):
        if not slots:
            raise ValueError("no device slot to run on")
        self._slots = slots
        self.fork = fork

    def slots(self) -> list[Placement]:
        return list(self._slots)

    def start(self, launch: Launch) -> Job:
        config = launch.config.replace(**launch.placement.config_updates())
        env = child_environment(launch.placement.env_updates())
        if self.fork:
            from mtl.ablate.forkserver import ForkedJob

            return ForkedJob(cli_args(config), env, launch.log_path)
        return LocalJob(train_command(config), env, launch.log_path)

    def start_many(self, launches: Sequence[Launch], entry_id: str) -> list[Job]:
        return [self.start(launch) for launch in launches]

    def adopt(self, run_dir: Path) -> Optional[Job]:
        return None  # a local run outlives no `mtl-ablate`: its lock tells whether another process trains it
