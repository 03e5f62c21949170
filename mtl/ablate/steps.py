"""How many optimizer steps a run takes: epochs times its batches per epoch (training images // batch size,
capped by ``limit_train_batches``), from its config alone, before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

from mtl.config import Config

MINISCAPES_TRAIN_IMAGES = 20000  # docs/DESIGN.md §3, when the dataset is not on this machine to count


def training_images(config: Config) -> int:
    if config.dataset == "synthetic":
        return config.synthetic_num_train
    folder = Path(config.dataset_root or "") / "train" / "rgb"
    try:
        return sum(1 for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return MINISCAPES_TRAIN_IMAGES


def steps_per_epoch(config: Config) -> int:
    batches = max(1, training_images(config) // config.batch_size)
    return min(batches, config.limit_train_batches) if config.limit_train_batches else batches


def run_steps(config: Config) -> int:
    """The optimizer steps of a whole run of ``config``."""
    return config.num_epochs * steps_per_epoch(config)
