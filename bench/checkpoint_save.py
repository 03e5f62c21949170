"""A training's checkpoint written the way ``mtl.run.io.atomic_torch_save`` writes it (torch.save streamed into
the temporary file) against serialized to memory first and then written (how it was written before), both
through ``atomic_open`` (temporary file, fsync, rename). The state is last.pt's bulk: the default model's
weights and its SGD momentum after one step (about 160 MB). Rounds alternate ABBA.

    python bench/checkpoint_save.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

import benchlib  # noqa: F401  (puts the repository on the path)
from benchlib import abba, bench_config, paired_ratios, print_header, scratch_dir, set_threads, spread, timed_wall_cpu
from mtl.models import build_model
from mtl.run.io import atomic_open, atomic_torch_save


def checkpoint_state() -> dict:
    model = build_model(bench_config())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    outputs = model(torch.zeros(2, 3, 64, 64))
    sum(o.float().mean() for o in outputs.values()).backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def through_memory(state: dict, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print_header("checkpoint save: streamed vs through memory", args)
    set_threads(1)
    state = checkpoint_state()
    with scratch_dir("mtl-bench-save-") as folder:
        path = Path(folder) / "last.pt"
        streamed, buffered = abba(lambda: timed_wall_cpu(lambda: atomic_torch_save(state, path)),
                                  lambda: timed_wall_cpu(lambda: through_memory(state, path)), args.rounds)
        size = path.stat().st_size
    print(f"checkpoint: {size / 2**20:.0f} MiB")
    for name, index in (("wall", 0), ("CPU", 1)):
        ours, before = [r[index] for r in streamed], [r[index] for r in buffered]
        print(f"{name} s: streamed {spread(ours)}, through memory {spread(before)}; "
              f"ratio {spread(paired_ratios(ours, before))}")


if __name__ == "__main__":
    main()
