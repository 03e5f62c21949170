"""``python -m mtl.data.synthetic``: write a synthetic dataset from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from mtl.data.miniscapes import DatasetError
from mtl.data.synthetic.dataset import BuildStopped, build_synthetic, default_root
from mtl.data.synthetic.params import SyntheticParams


def main(argv: Optional[list[str]] = None) -> int:
    defaults = SyntheticParams()
    parser = argparse.ArgumentParser(
        prog="python -m mtl.data.synthetic", description="Write a synthetic MiniScapes-layout dataset."
    )
    parser.add_argument("--root", help="target folder (default: the cache folder keyed by the parameters)")
    for name, value in defaults.to_dict().items():
        parser.add_argument(f"--{name}", type=int, default=value, help=f"default {value}")
    args = parser.parse_args(argv)
    params = SyntheticParams(**{k: getattr(args, k) for k in defaults.to_dict()})
    root = Path(args.root) if args.root else default_root(params)
    started = time.perf_counter()
    try:
        path = build_synthetic(root, params, progress=True)
    except BuildStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum  # as a shell reports a process ended by the signal
    except (DatasetError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} ({time.perf_counter() - started:.1f} s)")
    return 0

