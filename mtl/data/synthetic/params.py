"""The generator's parameters, and the version that keys cached datasets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# Bump when the generator's output changes, so cached datasets built by older code are not reused.
GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}  # part of each image's seed


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
    num_train: int = 240
    num_val: int = 40
    num_test: int = 40
    height: int = 128
    width: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic {name} must be at least 1, got {getattr(self, name)}")
        if self.height < 32 or self.width < 32:
            raise ValueError(f"synthetic images must be at least 32x32, got {self.width}x{self.height}")
        if self.seed < 0:
            raise ValueError(f"synthetic seed must be >= 0, got {self.seed}")

    @classmethod
    def from_config(cls, cfg: Any) -> SyntheticParams:
        return cls(
            num_train=cfg.synthetic_num_train,
            num_val=cfg.synthetic_num_val,
            num_test=cfg.synthetic_num_test,
            height=cfg.synthetic_height,
            width=cfg.synthetic_width,
            seed=cfg.synthetic_seed,
        )

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def short_hash(self, length: int = 10) -> str:
        text = json.dumps({**self.to_dict(), "generator_version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:length]
