"""How a step combines its task terms (config key ``loss_weighting``), and the state each method learns.

Every method combines the same per-task terms l_t = loss_weight_t x L_t (:meth:`MultiTaskLoss.terms`;
deep supervision included), so ``fixed`` with the default weights 0.5/0.5 is the template's loss and the
others start on the same scale:

- ``fixed``: sum_t l_t.
- ``uncertainty`` (Kendall, Gal and Cipolla, CVPR 2018, eq. 10): sum_t c_t exp(-s_t) l_t + s_t / 2 with
  a learned log-variance s_t = log sigma_t^2 per task; c = 1 for the classification loss (segmentation: the
  softmax likelihood's 1/sigma^2 L) and c = 1/2 for the regression loss (depth: the Gaussian's
  1/(2 sigma^2) L). s_t starts at 0 and is trained by the run's optimizer (its own parameter group, no
  weight decay).
- ``dwa`` (Liu, Johns and Davison, CVPR 2019): sum_t lambda_t l_t with
  lambda_t = T exp(w_t / temperature) / sum_i exp(w_i / temperature), T the number of tasks and
  w_t = Lbar_t(e-1) / Lbar_t(e-2) the ratio of the task's mean term over the two epochs before epoch e;
  lambda_t = 1 in the first two epochs.
- ``pcgrad`` (Yu et al., NeurIPS 2020, Algorithm 1): each task's gradient g_t of l_t over the parameters both
  tasks reach, less its projection on every other task's gradient it conflicts with (g_i . g_j < 0:
  g_i -= (g_i . g_j) / |g_j|^2 g_j); the step uses their sum, computed as a combination of the task
  gradients from their dot products. A parameter only one task reaches keeps that task's gradient. It
  costs one backward pass per task instead of one in all.

The learned state (log-variances, DWA's epoch means) travels in the checkpoint, so a resumed run is
bitwise the run never stopped; :meth:`LossWeighting.log_point` is what each training point logs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from mtl.config import Config

Scale = Callable[[Tensor], Tensor]  # what a loss passes through before backward (a GradScaler's scale, or nothing)


def unscaled(loss: Tensor) -> Tensor:
    return loss


class WeightingStateError(ValueError):
    """A checkpoint whose weighting state does not fit the run's method."""


class LossWeighting:
    """Fixed weights: the sum of the task terms. The base of the learned methods, whose hooks do nothing here."""

    name = "fixed"

    def __init__(self, tasks: tuple[str, ...], weights: dict[str, float]):
        self.tasks = tasks
        self.fixed = {t: weights[t] for t in tasks}

    def parameters(self) -> list[nn.Parameter]:
        """Learned parameters the optimizer trains with the model's (none here)."""
        return []

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        """The loss to minimise from the task terms."""
        total: Tensor | float = sum(terms[t] for t in self.tasks)
        assert isinstance(total, Tensor)  # a sum over at least one task
        return total

    def backward(self, terms: dict[str, Tensor], model: nn.Module, scale: Scale = unscaled) -> Tensor:
        """Fill the gradients of a step (the caller zeroed them); returns the loss minimised, detached."""
        total = self.combine(terms)
        scale(total).backward()
        return total.detach()

    def observe(self, terms: dict[str, Tensor]) -> None:
        """After each step, with the step's terms."""

    def end_epoch(self) -> None:
        """After each epoch's last step, before its checkpoint."""

    def task_weights(self) -> dict[str, float]:
        """The factor each task's unweighted loss L_t has in the loss minimised now."""
        return dict(self.fixed)

    def log_point(self) -> dict[str, float]:
        """What a training point logs: ``train/weight_<task>`` and the method's own values; a count kept over
        the steps since the last point starts again."""
        return {f"train/weight_{t}": w for t, w in self.task_weights().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name}

    def load_state_dict(self, state: Optional[dict[str, Any]], source: str) -> None:
        """Restore what :meth:`state_dict` saved (``source``: the checkpoint, for the error)."""
        method = (state or {}).get("method", LossWeighting.name)  # checkpoints before loss_weighting: fixed
        if method != self.name:
            raise WeightingStateError(f"{source}: holds the state of loss_weighting {method!r}, but this run uses "
                                      f"{self.name!r}")


# Kendall et al.'s factor of each task's loss: 1/sigma^2 for a classification (softmax) likelihood, 1/(2 sigma^2)
# for a regression (Gaussian) one.
UNCERTAINTY_FACTOR = {"semseg": 1.0, "depth": 0.5}


class UncertaintyWeighting(LossWeighting):
    name = "uncertainty"

    def __init__(self, tasks: tuple[str, ...], weights: dict[str, float], device: torch.device):
        super().__init__(tasks, weights)
        self.log_variance = nn.Parameter(torch.zeros(len(tasks), device=device))

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_variance]

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        total: Tensor | float = 0.0
        for i, task in enumerate(self.tasks):
            s = self.log_variance[i]
            total = total + UNCERTAINTY_FACTOR[task] * torch.exp(-s) * terms[task] + 0.5 * s
        assert isinstance(total, Tensor)
        return total

    def task_weights(self) -> dict[str, float]:
        s = self.log_variance.detach().double().cpu().tolist()
        return {t: UNCERTAINTY_FACTOR[t] * math.exp(-s[i]) * self.fixed[t] for i, t in enumerate(self.tasks)}

    def log_point(self) -> dict[str, float]:
        s = self.log_variance.detach().double().cpu().tolist()
        return {**super().log_point(), **{f"train/log_variance_{t}": s[i] for i, t in enumerate(self.tasks)}}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, "log_variance": self.log_variance.detach().clone()}

    def load_state_dict(self, state: Optional[dict[str, Any]], source: str) -> None:
        super().load_state_dict(state, source)
        assert state is not None
        with torch.no_grad():
            self.log_variance.copy_(state["log_variance"])


class DynamicWeightAverage(LossWeighting):
    name = "dwa"

    def __init__(self, tasks: tuple[str, ...], weights: dict[str, float], temperature: float,
                 device: torch.device):
        super().__init__(tasks, weights)
        self.temperature = temperature
        self.sums = torch.zeros(len(tasks), dtype=torch.float64, device=device)  # this epoch's terms
        self.steps = 0
        self.means: list[list[float]] = []  # the mean term of each task over each of the last two epochs
        self.lambdas = [1.0] * len(tasks)

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        total: Tensor | float = sum(lam * terms[t] for lam, t in zip(self.lambdas, self.tasks))
        assert isinstance(total, Tensor)
        return total

    def observe(self, terms: dict[str, Tensor]) -> None:
        self.sums += torch.stack([terms[t].detach().double() for t in self.tasks])
        self.steps += 1

    def end_epoch(self) -> None:
        self.means = [*self.means, (self.sums / self.steps).tolist()][-2:]
        self.sums.zero_()
        self.steps = 0
        self.lambdas = dwa_weights(self.means, self.temperature, len(self.tasks))

    def task_weights(self) -> dict[str, float]:
        return {t: lam * self.fixed[t] for lam, t in zip(self.lambdas, self.tasks)}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, "sums": self.sums.tolist(), "steps": self.steps, "means": self.means}

    def load_state_dict(self, state: Optional[dict[str, Any]], source: str) -> None:
        super().load_state_dict(state, source)
        assert state is not None
        self.sums = torch.tensor(state["sums"], dtype=torch.float64, device=self.sums.device)
        self.steps = int(state["steps"])
        self.means = [list(m) for m in state["means"]]
        self.lambdas = dwa_weights(self.means, self.temperature, len(self.tasks))


def dwa_weights(means: list[list[float]], temperature: float, tasks: int) -> list[float]:
    """DWA's lambda for each of ``tasks`` tasks from their mean terms over the epochs so far (the last two
    count; ones before there are two)."""
    if len(means) < 2:
        return [1.0] * tasks
    ratios = [last / before for last, before in zip(means[-1], means[-2])]
    exps = [math.exp(r / temperature) for r in ratios]
    return [len(ratios) * e / sum(exps) for e in exps]


class PCGrad(LossWeighting):
    name = "pcgrad"

    def __init__(self, tasks: tuple[str, ...], weights: dict[str, float]):
        super().__init__(tasks, weights)
        self.conflicts = 0  # steps since the last training point whose task gradients conflicted
        self.steps = 0

    def backward(self, terms: dict[str, Tensor], model: nn.Module, scale: Scale = unscaled) -> Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        per_task = [torch.autograd.grad(scale(terms[t]), params, retain_graph=i + 1 < len(self.tasks),
                                        allow_unused=True) for i, t in enumerate(self.tasks)]
        shared = {i for i in range(len(params)) if all(g[i] is not None for g in per_task)}
        factors, conflicted = pcgrad_factors(_gram(per_task, sorted(shared)))
        for i, param in enumerate(params):
            reached = [(f, g[i]) for f, g in zip(factors, per_task) if g[i] is not None]
            if i not in shared:  # one task's parameter: its own gradient
                reached = [(1.0, g) for _, g in reached]
            param.grad = _combination(reached)
        self.conflicts += int(conflicted)
        self.steps += 1
        return self.combine({t: terms[t].detach() for t in self.tasks})

    def log_point(self) -> dict[str, float]:
        share = self.conflicts / self.steps if self.steps else math.nan
        self.conflicts = self.steps = 0  # each point counts the steps since the one before
        return {**super().log_point(), "train/pcgrad_conflicts": share}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, "conflicts": self.conflicts, "steps": self.steps}

    def load_state_dict(self, state: Optional[dict[str, Any]], source: str) -> None:
        super().load_state_dict(state, source)
        assert state is not None
        self.conflicts, self.steps = int(state["conflicts"]), int(state["steps"])


def _gram(per_task: Sequence[Sequence[Optional[Tensor]]], shared: list[int]) -> list[list[float]]:
    """g_i . g_j of the task gradients over the ``shared`` parameters, summed in float64 on their device and
    read back once."""
    def dot(a: Sequence[Optional[Tensor]], b: Sequence[Optional[Tensor]]) -> Tensor:
        return torch.stack([torch.sum(a[i] * b[i], dtype=torch.float64) for i in shared]).sum()  # type: ignore[operator]

    count = len(per_task)
    values = torch.stack([dot(per_task[i], per_task[j]) for i in range(count) for j in range(count)]).tolist()
    return [values[i * count:(i + 1) * count] for i in range(count)]


def _combination(terms: list[tuple[float, Tensor]]) -> Optional[Tensor]:
    """sum_k f_k g_k of (factor, gradient) pairs; None for none."""
    total: Optional[Tensor] = None
    for factor, grad in terms:
        total = factor * grad if total is None else total + factor * grad
    return total


def pcgrad_factors(gram: list[list[float]]) -> tuple[list[float], bool]:
    """PCGrad's update as a combination of the task gradients: the factor of each in the sum of the projected
    gradients, from their Gram matrix ``gram[i][j] = g_i . g_j`` alone (each projected gradient stays a
    combination of the g_k, so no gradient is copied), and whether any pair conflicted. Each g_i is
    projected on every other g_j it conflicts with, in task order (with two tasks the order changes nothing)."""
    count = len(gram)
    factors = [0.0] * count
    conflicted = False
    for i in range(count):
        alpha = [1.0 if k == i else 0.0 for k in range(count)]  # projected g_i = sum_k alpha_k g_k
        for j in range(count):
            if j == i:
                continue
            dot = sum(alpha[k] * gram[k][j] for k in range(count))
            if dot < 0:  # g_i -= (g_i . g_j) / |g_j|^2 g_j
                alpha[j] -= dot / gram[j][j]
                conflicted = True
        factors = [f + a for f, a in zip(factors, alpha)]
    return factors, conflicted


def build_weighting(cfg: Config, device: torch.device) -> LossWeighting:
    """The weighting method ``cfg.loss_weighting`` over the tasks the run trains."""
    weights = {"semseg": cfg.loss_weight_semseg, "depth": cfg.loss_weight_depth}
    tasks = cfg.task_names
    if cfg.loss_weighting == "uncertainty":
        return UncertaintyWeighting(tasks, weights, device)
    if cfg.loss_weighting == "dwa":
        return DynamicWeightAverage(tasks, weights, cfg.dwa_temperature, device)
    if cfg.loss_weighting == "pcgrad":
        return PCGrad(tasks, weights)
    return LossWeighting(tasks, weights)
