"""Grade a submission.zip against a dataset's test labels, as the course grader would.

The archive is validated first (:func:`mtl.submission.validate_submission`, with the dataset's test
indices); then every test prediction is scored with :class:`mtl.metrics.MetricAccumulator`, exactly the
metric code of validation. Predictions cover the test image cropped from the top-left to sides that
are multiples of 32 (DESIGN.md section 3), so the labels are cropped the same way. The predicted depth is
the 8-bit disparity code of the archive, so SI-logRMSE includes its quantisation (validation scores the
network's float output).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from mtl.data.miniscapes import list_indices, read_depth, read_semseg, sample_path
from mtl.metrics import MetricAccumulator
from mtl.submission import read_prediction, validate_submission

CROP_MULTIPLE = 32


class GradeError(ValueError):
    """The submission or the dataset cannot be graded; the message says which file and why."""


def test_indices_with_labels(dataset_root: Path) -> list[int]:
    test_dir = dataset_root / "test"
    if not (test_dir / "rgb").is_dir():
        raise GradeError(f"{test_dir}/rgb does not exist: {dataset_root} is not a MiniScapes-layout dataset")
    missing = [m for m in ("semseg", "depth") if not (test_dir / m).is_dir()]
    if missing:
        raise GradeError(f"{test_dir} has no {' or '.join(missing)} labels, so it cannot be graded here "
                         "(MiniScapes' test split ships rgb only; the synthetic dataset keeps test labels)")
    return list_indices(test_dir / "rgb", ".jpg")


def _cropped(label: Any, shape: tuple[int, int], index: int, what: str) -> torch.Tensor:
    height, width = label.shape
    expected = (height - height % CROP_MULTIPLE, width - width % CROP_MULTIPLE)
    if tuple(shape) not in (expected, (height, width)):
        raise GradeError(f"prediction {what} {index} is {shape[1]}x{shape[0]}; expected {expected[1]}x{expected[0]} "
                         f"(the {width}x{height} test image cropped to multiples of {CROP_MULTIPLE})")
    return torch.from_numpy(label[: shape[0], : shape[1]].copy())


def grade(submission: str | Path, dataset_root: str | Path) -> dict[str, float]:
    """``grader``, ``iou``, ``si_logrmse`` and ``iou_class/<name>`` of a submission on the test split."""
    submission, dataset_root = Path(submission), Path(dataset_root)
    if not submission.is_file():
        raise GradeError(f"submission {submission} does not exist")
    indices = test_indices_with_labels(dataset_root)
    problems = validate_submission(submission, test_indices=indices)
    if problems:
        raise GradeError("invalid submission:\n  " + "\n  ".join(problems))
    metrics = MetricAccumulator("cpu")
    with zipfile.ZipFile(submission) as archive:
        for index in indices:
            semseg, depth = read_prediction(archive, index)
            gt_semseg = _cropped(read_semseg(sample_path(dataset_root, "test", "semseg", index)), semseg.shape, index,
                                 "predictions/semseg")
            gt_depth = _cropped(read_depth(sample_path(dataset_root, "test", "depth", index)), depth.shape, index,
                                "predictions/depth")
            metrics.update_semseg(torch.from_numpy(semseg.astype("int64")), gt_semseg.long())
            metrics.update_depth(torch.from_numpy(depth)[None], gt_depth[None])
    return metrics.compute()
