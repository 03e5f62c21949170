"""``mtl-ablate grade``: hand-computed metrics on planted labels, clear errors, and agreement with the
engine's own validation when the test split is the validation split."""

from __future__ import annotations

import json
import math
import shutil
import zipfile

import numpy as np
import pytest

from mtl.data.miniscapes import decode_depth, encode_depth, read_depth, write_depth, write_rgb, write_semseg
from mtl.run.records import read_record
from planting import plant_predictions, plant_run, plant_submission, validation_point
from report.commands import main as report_main
from report.grade import GradeError, grade
from support import forked_train, tiny_args

HEIGHT, WIDTH = 40, 70  # not multiples of 32: predictions cover the top-left 32x64


def _labels(index: int) -> tuple[np.ndarray, np.ndarray]:
    semseg = np.zeros((HEIGHT, WIDTH), np.uint8)  # road on the left
    semseg[:, 32:] = 13  # car from column 32: half of the 64 columns predictions cover
    semseg[0, :] = 255  # an ignored row
    rng = np.random.default_rng(index)
    depth = rng.uniform(5.0, 80.0, (HEIGHT, WIDTH))
    valid = np.ones((HEIGHT, WIDTH), bool)
    valid[1, :10] = False  # some pixels without depth
    return semseg, decode_depth(encode_depth(depth, valid))


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "data"
    for index in range(2):
        semseg, depth = _labels(index)
        for modality in ("rgb", "semseg", "depth"):
            (root / "test" / modality).mkdir(parents=True, exist_ok=True)
        write_rgb(root / "test" / "rgb" / f"{index}.jpg", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
        write_semseg(root / "test" / "semseg" / f"{index}.png", semseg)
        write_depth(root / "test" / "depth" / f"{index}.png", depth, valid=depth > 0)
    return root


def _predictions():
    predictions = {}
    for index in range(2):
        rng = np.random.default_rng(100 + index)
        semseg = np.zeros((32, 64), np.uint8)  # everything road: the car half is wrong
        depth = rng.uniform(5.0, 80.0, (32, 64))
        predictions[index] = (semseg, depth)
    return predictions


@pytest.fixture()
def submission(tmp_path):
    run_dir = plant_run(tmp_path / "runs", "e", "a", 0, points=[validation_point(10, 1, 1.0, 50.0, 50.0)])
    plant_predictions(run_dir, _predictions())
    return plant_submission(run_dir)


def _expected(dataset) -> dict[str, float]:
    """The docs/DESIGN.md §3 formulas written out in numpy, independent of mtl.train.metrics."""
    confusion = np.zeros((19, 19), np.int64)
    per_image = []
    for index, (pred_ids, pred_depth_m) in _predictions().items():
        gt_ids, gt_depth = _labels(index)
        gt_ids, gt_depth = gt_ids[:32, :64], gt_depth[:32, :64]
        keep = gt_ids != 255
        np.add.at(confusion, (gt_ids[keep].astype(int), pred_ids[keep].astype(int)), 1)
        pred = decode_depth(encode_depth(pred_depth_m)).astype(np.float64)  # what the PNG holds
        pred = np.clip(pred, 4.0, 300.0)
        valid = gt_depth > 0
        d = np.log(np.maximum(gt_depth[valid].astype(np.float64), 0.01)) - np.log(np.maximum(pred[valid], 0.01))
        per_image.append(100.0 * math.sqrt(np.mean(d**2) - d.sum() ** 2 / d.size**2))
    tp = np.diag(confusion).astype(float)
    iou_class = 100.0 * tp / np.maximum(confusion.sum(0) + confusion.sum(1) - tp, 1e-12)
    iou, si = float(iou_class.mean()), float(np.mean(per_image))
    return {"iou": iou, "si_logrmse": si, "grader": max(iou - 50, 0) + max(50 - si, 0), "road": iou_class[0],
            "car": iou_class[13]}


def test_grade_matches_hand_computed_metrics(dataset, submission):
    metrics = grade(submission, dataset)
    expected = _expected(dataset)
    # Road: every valid pixel of both images predicted road, half of them are car -> IoU 50 %.
    assert expected["road"] == pytest.approx(50.0) and expected["car"] == 0.0
    assert metrics["iou"] == pytest.approx(expected["iou"], abs=1e-9)
    assert metrics["iou"] == pytest.approx(50.0 / 19, abs=1e-9)  # road 50 %, every other class 0
    assert metrics["si_logrmse"] == pytest.approx(expected["si_logrmse"], abs=1e-6)
    assert metrics["grader"] == pytest.approx(expected["grader"], abs=1e-6)
    assert metrics["iou_class/road"] == pytest.approx(50.0) and metrics["iou_class/car"] == 0.0


def test_grade_json_output(dataset, submission, capsys):
    assert report_main(["grade", str(submission), "--dataset-root", str(dataset), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"grader", "iou", "si_logrmse", "iou_class"}
    assert len(payload["iou_class"]) == 19 and payload["iou_class"]["road"] == pytest.approx(50.0)
    assert payload["iou"] == pytest.approx(_expected(dataset)["iou"])


def test_grade_without_test_labels_is_a_clear_error(dataset, submission, capsys):
    shutil.rmtree(dataset / "test" / "semseg")
    with pytest.raises(GradeError, match=r"test has no semseg labels, so it cannot be graded"):
        grade(submission, dataset)
    assert report_main(["grade", str(submission), "--dataset-root", str(dataset)]) == 2
    assert "cannot be graded" in capsys.readouterr().err


def test_grade_refuses_an_invalid_archive(dataset, submission, tmp_path):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(submission) as source, zipfile.ZipFile(broken, "w") as target:
        for name in source.namelist():
            if name != "predictions/depth/1.png":
                target.writestr(name, source.read(name))
    with pytest.raises(GradeError, match=r"predictions/depth lacks 1 test images, e\.g\. \[1\]"):
        grade(broken, dataset)


def test_grade_refuses_predictions_of_the_wrong_size(dataset, tmp_path):
    run_dir = plant_run(tmp_path / "runs", "e", "b", 0, points=[validation_point(10, 1, 1.0, 50.0, 50.0)])
    plant_predictions(run_dir, {i: (np.zeros((32, 32), np.uint8), np.full((32, 32), 10.0)) for i in range(2)})
    with pytest.raises(GradeError, match=r"prediction predictions/semseg 0 is 32x32; expected 64x32"):
        grade(plant_submission(run_dir), dataset)


@pytest.mark.slow
def test_grade_agrees_with_the_engine_when_test_is_the_validation_split(tmp_path, cache_dir):
    """A tiny run on a dataset whose test split is a copy of its validation split: grading the run's
    submission.zip reproduces the validation metrics of its best step. Segmentation matches exactly; depth
    differs only by the archive's 8-bit disparity encoding (validation scores the float output)."""
    from mtl.config import make_config
    from mtl.data import resolve_dataset_root
    from support import TINY

    source = resolve_dataset_root(make_config(TINY))
    root = tmp_path / "data"
    for split in ("train", "val"):
        shutil.copytree(source / split, root / split)
    shutil.copytree(source / "val", root / "test")
    shutil.copy(source / "statistics.json", root / "statistics.json")
    run_dir = tmp_path / "run"
    result = forked_train(run_dir, *tiny_args(dataset="miniscapes", num_epochs=1), f"--dataset_root={root}")
    assert result.returncode == 0, result.stdout
    best = read_record(run_dir).best()
    metrics = grade(run_dir / "submission.zip", root)
    assert metrics["iou"] == pytest.approx(best["val/iou"], abs=1e-9)
    for key, value in metrics.items():
        if key.startswith("iou_class/"):
            assert value == pytest.approx(best[f"val/{key}"], abs=1e-9), key
    # Half a disparity code of error on depths of 4..300 m: small against SI-logRMSE's scale of 0..100.
    assert metrics["si_logrmse"] == pytest.approx(best["val/si_logrmse"], abs=1.0)
    assert read_depth(root / "test" / "depth" / "0.png").shape == read_depth(root / "val" / "depth" / "0.png").shape
