"""What a run trained with, captured at the start of each attempt as W&B and ClearML capture it: the git commit
and dirty diff of the checkout (cut at a bound), ``pip freeze``, torch with its CUDA and cuDNN, and the
device by name. Every text is redacted with the patterns the export's leak scan refuses (mtl.secrets), so
neither the run's records, its W&B config nor the export can carry an API key or a home path.

Kept in the run directory's ``environment.json`` (:class:`mtl.run.model.Environments`): one entry per attempt
that differed from the one before. ``mtl-ablate diff`` compares two runs' latest entries.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from mtl.run.errors import RecordError
from mtl.run.io import atomic_write_text
from mtl.run.layout import REPO_ROOT, RunDirectory
from mtl.run.model import Environment, Environments
from mtl.run.records import read_environment
from mtl.secrets import redact

# A dirty diff is kept up to this size (a whole edited module is a few KiB); the rest is cut, its size and
# its digest kept.
MAX_DIFF_BYTES = 256 << 10
GIT_TIMEOUT_S = 10.0


def _git(*args: str) -> Optional[str]:
    """The output of ``git args`` in the checkout the code runs from; None outside a checkout or without git."""
    try:
        result = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, timeout=GIT_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.decode("utf-8", "replace") if result.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """commit, dirty and the diff (`git diff HEAD` of tracked files and the names of untracked ones)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != REPO_ROOT.resolve():
        return {}  # not a checkout (an installed package), or one that merely encloses it
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {}
    diff = _git("diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    untracked = _git("ls-files", "--others", "--exclude-standard") or ""
    if untracked.strip():
        diff += "".join(f"untracked: {name}\n" for name in untracked.splitlines())
    return {"git_commit": commit.strip(), "git_dirty": bool(diff), "git_diff": diff}


def packages() -> list[str]:
    """``name==version`` of every installed distribution, sorted (what `pip freeze` lists)."""
    # dist.metadata reads and parses the file again on each access: once per distribution, not three times.
    metadata = [dist.metadata for dist in importlib.metadata.distributions()]
    found = {f"{meta['Name']}=={meta['Version']}" for meta in metadata if meta["Name"]}
    return sorted(found, key=str.lower)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {_cpu_name()}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bounded(diff: str) -> tuple[str, int]:
    data = diff.encode("utf-8", "replace")
    if len(data) <= MAX_DIFF_BYTES:
        return diff, len(data)
    kept = data[:MAX_DIFF_BYTES].decode("utf-8", "ignore")
    return kept + f"\n[cut: {len(data)} bytes in all, {MAX_DIFF_BYTES} kept]\n", len(data)


def capture(device: torch.device) -> Environment:
    """The environment of this process, redacted."""
    git = git_state()
    found: list[str] = []
    diff = git.get("git_diff")
    if diff is not None:
        diff, kinds = redact(diff)
        found += kinds
        git["git_diff_sha256"] = hashlib.sha256(diff.encode("utf-8", "replace")).hexdigest()
        git["git_diff"], git["git_diff_bytes"] = _bounded(diff)
    lines = []
    for line in packages():
        line, kinds = redact(line)
        found += kinds
        lines.append(line)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return Environment(python=sys.version.split()[0], platform=platform.platform(), torch=torch.__version__,
                       cuda=torch.version.cuda, cudnn=str(cudnn) if cudnn else None, device=device_name(device),
                       packages=tuple(lines), redacted=tuple(dict.fromkeys(found)), **git)


def record(run: RunDirectory, environment: Environment) -> None:
    """Add ``environment`` to the run's environment.json unless it is the one the last attempt recorded."""
    try:
        known = read_environment(run.path)
    except RecordError:
        known = None  # damaged: the file is the trainer's, rewritten from what it knows
    attempts = known.attempts if known is not None else ()
    if attempts and attempts[-1] == environment:
        return
    atomic_write_text(run.environment, Environments(attempts=(*attempts, environment)).model_dump_json(indent=1))


def summary(environment: Environment) -> dict[str, Any]:
    """The environment for the run's W&B config: everything but the diff's text and the package list, which
    W&B's own code and requirements capture holds."""
    return environment.model_dump(exclude={"git_diff", "packages"})
