"""Batches for training and evaluation: the resumable per-epoch sampler and the DataLoader settings."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from mtl.config import Config
from mtl.run.stopping import ignore_stop_signals


class EpochSampler(Sampler):
    """Yields ``(epoch, position)``: a permutation seeded by (seed, epoch), resumable mid-epoch.

    The dataset seeds each sample's augmentation from (seed, epoch, index), so the batches after a
    resume are exactly those an uninterrupted run would have seen.
    """

    def __init__(self, length: int, seed: int):
        self.length, self.seed = length, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        return iter([(self.epoch, position) for position in order[self.skip:]])

    def __len__(self) -> int:
        return self.length - self.skip


def make_loader(dataset, cfg: Config, *, train: bool, sampler: Sampler | None = None) -> DataLoader:
    workers = cfg.workers if train else cfg.workers_validation
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size if train else cfg.batch_size_validation,
        sampler=sampler,
        shuffle=False,
        drop_last=train,
        num_workers=workers,
        pin_memory=cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and workers > 0,
        # A stop signal sent to the whole process group (SLURM, a container, a closed terminal) is for the
        # trainer, which checkpoints and stops the workers itself.
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
