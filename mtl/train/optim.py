"""The optimizer and learning-rate schedule a config names."""

from __future__ import annotations

import torch

from mtl.config import Config


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.optimizer_lr, momentum=cfg.optimizer_momentum,
                               weight_decay=cfg.optimizer_weight_decay)
    return torch.optim.Adam(params, lr=cfg.optimizer_lr, weight_decay=cfg.optimizer_weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    # Poly schedule stepped per epoch, as the template does.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: max(0.0, 1.0 - epoch / cfg.num_epochs) ** cfg.lr_scheduler_power)
