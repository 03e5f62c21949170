"""Each loss-weighting method against its paper's formula, written out here independently, on hand-made task
losses; PCGrad's update on a two-parameter problem against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtl.config import ConfigError, make_config
from mtl.train.optim import build_optimizer
from mtl.train.weighting import (
    DynamicWeightAverage,
    LossWeighting,
    PCGrad,
    UncertaintyWeighting,
    WeightingStateError,
    build_weighting,
)

TASKS = ("semseg", "depth")
WEIGHTS = {"semseg": 0.5, "depth": 0.5}
CPU = torch.device("cpu")


def terms(semseg: float, depth: float) -> dict[str, torch.Tensor]:
    return {"semseg": torch.tensor(semseg, dtype=torch.float64), "depth": torch.tensor(depth, dtype=torch.float64)}


def test_fixed_weighting_is_the_sum_of_the_weighted_task_losses():
    weighting = LossWeighting(TASKS, {"semseg": 0.75, "depth": 0.25})
    l_seg, l_depth = 2.0, 3.0
    total = weighting.combine(terms(0.75 * l_seg, 0.25 * l_depth))
    assert float(total) == pytest.approx(0.75 * 2.0 + 0.25 * 3.0)
    assert weighting.log_point() == {"train/weight_semseg": 0.75, "train/weight_depth": 0.25}


def test_uncertainty_weighting_is_kendalls_loss_for_a_classification_and_a_regression_task():
    weighting = UncertaintyWeighting(TASKS, WEIGHTS, CPU)
    s_seg, s_depth = 0.3, -0.7  # learned log-variances log(sigma^2)
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([s_seg, s_depth]))
    l_seg, l_depth = 2.0, 3.0  # the terms the method sees (loss_weight x loss)
    # Kendall et al. 2018, eq. 10, a classification (softmax: 1/sigma^2 L) and a regression (Gaussian:
    # 1/(2 sigma^2) L) output: L = 1/sigma_1^2 L_1 + 1/(2 sigma_2^2) L_2 + log sigma_1 + log sigma_2.
    sigma_seg, sigma_depth = math.sqrt(math.exp(s_seg)), math.sqrt(math.exp(s_depth))
    expected = (l_seg / sigma_seg**2 + l_depth / (2 * sigma_depth**2) + math.log(sigma_seg) + math.log(sigma_depth))
    total = weighting.combine(terms(l_seg, l_depth))
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    # d/ds of exp(-s) L + s/2 is -exp(-s) L + 1/2: the log-variances learn from the same loss.
    total.backward()
    assert weighting.log_variance.grad.tolist() == pytest.approx(
        [-l_seg / sigma_seg**2 + 0.5, -l_depth / (2 * sigma_depth**2) + 0.5], rel=1e-6)
    # Logged: the factor of each unweighted loss (loss_weight / sigma^2, halved for the regression) and s.
    point = weighting.log_point()
    assert point["train/weight_semseg"] == pytest.approx(0.5 / sigma_seg**2)
    assert point["train/weight_depth"] == pytest.approx(0.5 / (2 * sigma_depth**2))
    assert point["train/log_variance_depth"] == pytest.approx(s_depth)


def test_uncertainty_log_variances_start_at_zero_and_train_in_their_own_group_without_weight_decay():
    cfg = make_config(loss_weighting="uncertainty")
    weighting = build_weighting(cfg, CPU)
    assert weighting.log_variance.tolist() == [0.0, 0.0]
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model, weighting.parameters())
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 1]
    assert optimizer.param_groups[0]["weight_decay"] == cfg.optimizer_weight_decay
    assert optimizer.param_groups[1]["weight_decay"] == 0.0 and optimizer.param_groups[1]["params"][0] is \
        weighting.log_variance


def feed_epoch(weighting: DynamicWeightAverage, steps: list[tuple[float, float]]) -> None:
    for semseg, depth in steps:
        weighting.observe(terms(semseg, depth))
    weighting.end_epoch()


def test_dwa_weights_follow_the_ratio_of_each_tasks_loss_over_the_last_two_epochs():
    temperature = 2.0
    weighting = DynamicWeightAverage(TASKS, WEIGHTS, temperature, CPU)
    assert weighting.lambdas == [1.0, 1.0]  # epoch 1
    feed_epoch(weighting, [(1.0, 3.0), (3.0, 5.0)])  # means (2, 4)
    assert weighting.lambdas == [1.0, 1.0]  # epoch 2: one epoch's losses are no ratio yet
    feed_epoch(weighting, [(1.0, 3.0)])  # means (1, 3)
    # Liu et al. 2019: w_k = L_k(t-1) / L_k(t-2); lambda_k = K exp(w_k / T) / sum_i exp(w_i / T), K = 2 tasks.
    w_seg, w_depth = 1.0 / 2.0, 3.0 / 4.0
    denominator = math.exp(w_seg / temperature) + math.exp(w_depth / temperature)
    lam_seg = 2 * math.exp(w_seg / temperature) / denominator
    lam_depth = 2 * math.exp(w_depth / temperature) / denominator
    assert weighting.lambdas == pytest.approx([lam_seg, lam_depth])
    assert float(weighting.combine(terms(0.7, 1.1))) == pytest.approx(lam_seg * 0.7 + lam_depth * 1.1)
    # The depth loss fell more slowly, so depth gets the larger weight; logged times loss_weight.
    assert weighting.log_point() == pytest.approx({"train/weight_semseg": 0.5 * lam_seg, "train/weight_depth":
                                                   0.5 * lam_depth})
    feed_epoch(weighting, [(0.5, 3.0)])  # only the last two epochs count: (1, 3) then (0.5, 3)
    w_seg, w_depth = 0.5 / 1.0, 3.0 / 3.0
    denominator = math.exp(w_seg / temperature) + math.exp(w_depth / temperature)
    assert weighting.lambdas[1] == pytest.approx(2 * math.exp(w_depth / temperature) / denominator)


def test_dwa_state_restores_mid_epoch_sums_and_history():
    weighting = DynamicWeightAverage(TASKS, WEIGHTS, 2.0, CPU)
    feed_epoch(weighting, [(1.0, 3.0)])
    feed_epoch(weighting, [(2.0, 2.0)])
    weighting.observe(terms(0.25, 0.5))  # a step into the third epoch, then a checkpoint
    restored = DynamicWeightAverage(TASKS, WEIGHTS, 2.0, CPU)
    restored.load_state_dict(weighting.state_dict(), "last.pt")
    assert restored.lambdas == weighting.lambdas and restored.steps == 1
    for copy in (weighting, restored):
        feed_epoch(copy, [(0.75, 1.5)])
    assert restored.lambdas == weighting.lambdas and restored.means == weighting.means


def test_a_checkpoint_of_another_method_is_refused_by_name():
    state = DynamicWeightAverage(TASKS, WEIGHTS, 2.0, CPU).state_dict()
    with pytest.raises(WeightingStateError, match=r"last.pt: holds the state of loss_weighting 'dwa'.*'uncertainty'"):
        UncertaintyWeighting(TASKS, WEIGHTS, CPU).load_state_dict(state, "last.pt")
    LossWeighting(TASKS, WEIGHTS).load_state_dict(None, "last.pt")  # checkpoints from before: fixed weights


class TwoParameters(nn.Module):
    """theta = (theta_1, theta_2), shared by both tasks, and a parameter only the semseg task reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.5, -0.25]))
        self.own = nn.Parameter(torch.tensor(2.0))

    def losses(self) -> dict[str, torch.Tensor]:
        theta_1, theta_2 = self.theta
        # Gradients over theta: semseg (1, 1), depth (-1, 0): their dot product is -1, they conflict.
        return {"semseg": theta_1 + theta_2 + 3.0 * self.own, "depth": -theta_1}


def test_pcgrad_update_on_a_two_parameter_problem_matches_the_hand_computation():
    model = TwoParameters()
    weighting = PCGrad(TASKS, {"semseg": 1.0, "depth": 1.0})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    total = weighting.backward(model.losses(), model)
    # By hand (Yu et al. 2020, Algorithm 1): g1 = (1, 1), g2 = (-1, 0), g1.g2 = -1 < 0, so
    #   g1' = g1 - (g1.g2)/|g2|^2 g2 = (1, 1) - (-1)/1 (-1, 0) = (0, 1)
    #   g2' = g2 - (g2.g1)/|g1|^2 g1 = (-1, 0) - (-1)/2 (1, 1) = (-0.5, 0.5)
    #   g = g1' + g2' = (-0.5, 1.5)
    assert model.theta.grad.tolist() == pytest.approx([-0.5, 1.5])
    assert float(model.own.grad) == pytest.approx(3.0)  # reached by semseg alone: its own gradient
    assert float(total) == pytest.approx(0.5 - 0.25 + 6.0 - 0.5)
    optimizer.step()
    assert model.theta.tolist() == pytest.approx([0.5 + 0.1 * 0.5, -0.25 - 0.1 * 1.5])
    assert weighting.log_point()["train/pcgrad_conflicts"] == 1.0


def test_pcgrad_leaves_agreeing_gradients_alone_and_scales_with_the_loss_weights():
    model = TwoParameters()
    agreeing = {"semseg": model.theta[0] * 2.0, "depth": model.theta[1] * 3.0}  # (2, 0) and (0, 3): dot 0
    PCGrad(TASKS, WEIGHTS).backward(agreeing, model)
    assert model.theta.grad.tolist() == pytest.approx([2.0, 3.0])
    model.zero_grad()
    half = {t: 0.5 * loss for t, loss in model.losses().items()}  # loss_weight 0.5: half the update
    PCGrad(TASKS, WEIGHTS).backward(half, model)
    assert model.theta.grad.tolist() == pytest.approx([-0.25, 0.75])


def test_config_refuses_weighting_methods_and_distillation_on_one_task():
    with pytest.raises(ConfigError, match="loss_weighting.*'dwa'.*single-task run has one"):
        make_config(tasks="depth", loss_weighting="dwa")
    with pytest.raises(ConfigError, match="distillation.*needs both tasks"):
        make_config(tasks="semseg", model_name="distillation")
    with pytest.raises(ConfigError, match="dwa_temperature.*only applies to loss_weighting 'dwa'"):
        make_config(dwa_temperature=1.0)
    assert make_config(tasks="semseg").task_names == ("semseg",)
    assert make_config().task_names == ("semseg", "depth")
