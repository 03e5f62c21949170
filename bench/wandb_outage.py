"""Benchmark of a W&B outage: what an unreachable W&B server adds to a run's wall time.

Trains the tests' tiny run four times as ``mtl-train`` subprocesses: with W&B disabled, offline, and
twice as a logged-in user (a key in ~/.netrc for wandb's default server) whose every connection goes to a proxy on
127.0.0.1 that answers nothing -- once with a short ``wandb_init_timeout_s`` and once with the default.
Prints each wall time and the outage runs' extra seconds over the disabled and the offline run (the
latter is what the outage itself costs); it asserts nothing.
Nothing leaves the machine.

    python bench/wandb_outage.py [--short-timeout 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from faults.wandb_outage import RecordingBlackHole, outage_environment  # noqa: E402
from mtl.config import Config  # noqa: E402
from support import TINY  # noqa: E402


def train(run_dir: Path, env: dict[str, str], **overrides) -> tuple[float, int, str]:
    args = [f"--{k}={v}" for k, v in {**TINY, "log_dir": run_dir, **overrides}.items()]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mtl.cli", *args], check=False, env=env, cwd=run_dir.parent,
                            capture_output=True, text=True)
    return time.monotonic() - started, result.returncode, result.stdout + result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short-timeout", type=float, default=3.0)
    args = parser.parse_args()
    default_timeout = Config.model_fields["wandb_init_timeout_s"].default
    proxy = RecordingBlackHole()
    with tempfile.TemporaryDirectory(prefix="wandb-outage-") as scratch:
        base = Path(scratch)
        env = outage_environment(base / "home", proxy.url, REPO)
        env["MTL_CACHE_DIR"] = str(base / "cache")
        train(base / "warm-up", env, wandb_mode="disabled")  # the dataset cache, and a warm file cache
        cases = [("W&B disabled", {"wandb_mode": "disabled"}),
                 ("W&B offline (no server asked)", {"wandb_mode": "offline"}),
                 (f"W&B unreachable, init timeout {args.short_timeout:g} s",
                  {"wandb_mode": "auto", "wandb_init_timeout_s": args.short_timeout}),
                 (f"W&B unreachable, init timeout {default_timeout:g} s (default)", {"wandb_mode": "auto"})]
        walls = []
        for index, (name, overrides) in enumerate(cases):
            wall, code, output = train(base / f"run{index}", env, **overrides)
            fell_back = "continuing with W&B offline" in output
            print(f"{name:48s} wall {wall:6.1f} s  exit {code}  fell back to offline: {fell_back}")
            walls.append(wall)
        proxy.close()
    for (name, _), wall in zip(cases[2:], walls[2:]):
        print(f"extra delay, {name}: {wall - walls[0]:+.1f} s over disabled, {wall - walls[1]:+.1f} s over offline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
