"""Hand-computed cases for the exact formulas of docs/DESIGN.md §3."""

import math

import pytest
import torch

from mtl.train.metrics import MetricAccumulator, grader_score


def test_iou_ignores_255_and_averages_absent_classes_as_zero():
    acc = MetricAccumulator()
    gt = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 5]])
    acc.update_semseg(pred, gt)
    result = acc.compute()
    # class 0: TP 1, FN 1 -> 50; class 1: TP 2, FP 1 -> 66.67; the other 17 classes: 0
    assert result["iou_class/road"] == pytest.approx(50.0)
    assert result["iou_class/sidewalk"] == pytest.approx(200 / 3)
    assert result["iou_class/car"] == 0.0
    assert result["iou"] == pytest.approx((50.0 + 200 / 3) / 19)


def test_si_logrmse_per_image_over_valid_pixels():
    acc = MetricAccumulator()
    gt = torch.tensor([[10.0, 20.0, 0.0], [0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]).view(3, 1, 1, 3)
    pred = torch.tensor([[10.0, 10.0, 5.0], [7.0, 7.0, 7.0], [1000.0, 1.0, 1.0]]).view(3, 1, 1, 3)
    acc.update_depth(pred, gt)
    # image 1: d = [0, ln 2] -> 100 * sqrt(ln2^2/2 - ln2^2/4) = 50 ln 2; image 2: no valid pixel, skipped;
    # image 3: one pixel (prediction clamped to 300 m) -> 0
    assert acc.compute()["si_logrmse"] == pytest.approx((50 * math.log(2) + 0.0) / 2)


def test_depth_predictions_are_clamped_to_4_300_m():
    acc = MetricAccumulator()
    gt = torch.tensor([4.0, 300.0]).view(1, 1, 1, 2)
    pred = torch.tensor([0.5, 5000.0]).view(1, 1, 1, 2)
    acc.update_depth(pred, gt)
    assert acc.compute()["si_logrmse"] == pytest.approx(0.0, abs=1e-9)


def test_grader_formula_and_accumulation_across_batches():
    assert grader_score(67.46, 26.98) == pytest.approx(17.46 + 23.02)
    assert grader_score(40.0, 60.0) == 0.0
    whole, split = MetricAccumulator(), MetricAccumulator()
    torch.manual_seed(0)
    gt = torch.randint(0, 19, (4, 8, 8))
    gt[0, 0] = 255
    logits = torch.randn(4, 19, 8, 8)
    depth_gt = torch.rand(4, 1, 8, 8) * 50 + 5
    depth_gt[1] = 0
    depth_pred = torch.rand(4, 1, 8, 8) * 50 + 5
    whole.update(logits, gt, depth_pred, depth_gt)
    for i in range(4):
        split.update(logits[i:i + 1], gt[i:i + 1], depth_pred[i:i + 1], depth_gt[i:i + 1])
    assert whole.compute() == pytest.approx(split.compute())
    result = whole.compute()
    assert result["grader"] == pytest.approx(grader_score(result["iou"], result["si_logrmse"]))


def test_no_valid_depth_gives_nan_not_a_crash():
    acc = MetricAccumulator()
    acc.update_depth(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert math.isnan(acc.compute()["si_logrmse"])
