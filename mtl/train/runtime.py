"""Process-level helpers of a training run: device choice, seeding, mixed precision, batch transfer, the
random-number-generator states a checkpoint carries, and the training clock."""

from __future__ import annotations

import contextlib
import os
import random
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch

from mtl.config import Config


def device_problem(name: str) -> Optional[str]:
    """Why config key 'device' cannot be ``name`` on this machine (no CUDA, or no device of that index), or
    None when it can."""
    if not name.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
        return f"config key 'device' is {name!r} but this machine has no CUDA device ({build}); expected auto or cpu"
    count, index = torch.cuda.device_count(), torch.device(name).index
    if index is not None and index >= count:
        return (f"config key 'device' is {name!r} but this machine has {count} CUDA device(s); expected cuda, "
                f"auto, cpu or cuda:0 to cuda:{count - 1}")
    return None


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem:
        raise RuntimeError(problem)
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True


def autocast(cfg: Config, device: torch.device):
    if cfg.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run the block without moving any random-number generator: work done only for display must not
    change the training that follows (a resumed run has to see the same random numbers)."""
    states = rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)


class Clock:
    """Training seconds, continuing across resumes."""

    def __init__(self, already: float):
        self.already, self.start = already, time.monotonic()

    def elapsed(self) -> float:
        return self.already + time.monotonic() - self.start
