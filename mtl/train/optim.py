"""The optimizer and learning-rate schedule a config names."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mtl.config import Config


def build_optimizer(cfg: Config, model: torch.nn.Module,
                    weighting: Sequence[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """The optimizer of the model's parameters and of a weighting method's learned ones (``weighting``: their
    own group, without weight decay, which would pull a log-variance towards 0 for no reason of the task's)."""
    params: Any = [p for p in model.parameters() if p.requires_grad]
    if weighting:
        params = [{"params": params}, {"params": list(weighting), "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.optimizer_lr, momentum=cfg.optimizer_momentum,
                               weight_decay=cfg.optimizer_weight_decay)
    return torch.optim.Adam(params, lr=cfg.optimizer_lr, weight_decay=cfg.optimizer_weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    # Poly schedule stepped per epoch, as the template does.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: max(0.0, 1.0 - epoch / cfg.num_epochs) ** cfg.lr_scheduler_power)
