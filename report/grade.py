"""Grade a submission.zip against a dataset's test labels, as the course grader would.

The archive is validated first (:func:`mtl.train.submission.validate_submission`, with the dataset's test
indices); then every test prediction is scored with :class:`mtl.train.metrics.MetricAccumulator`, exactly the
metric code of validation. Predictions cover the test image cropped from the top-left to sides that
are multiples of 32 (docs/DESIGN.md §3), so the labels are cropped the same way. The predicted depth is
the 8-bit disparity code of the archive, so SI-logRMSE includes its quantisation (validation scores the
network's float output).

Grading never trusts the archive: member sizes, compression ratios, duplicate names and PNG pixel counts
are checked before anything is inflated or decoded (:mod:`mtl.safezip`), so a hostile archive is refused
with a message, in bounded memory. Without ``--dataset-root`` the dataset is the one the run was trained
on: the dataset keys of source.zip's cmd.txt, with the run's config.yaml beside the archive (if there)
for the folder, a run-invariant key that cmd.txt leaves out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl.run.layout import RunDirectory
from mtl.safezip import ArchiveError, open_zip
from mtl.train.submission import directory_problems, read_cmd, read_prediction, validate_submission

CROP_MULTIPLE = 32


class GradeError(ValueError):
    """The submission or the dataset cannot be graded; the message says which file and why."""


def test_indices_with_labels(dataset_root: Path) -> list[int]:
    from mtl.data.miniscapes import list_indices

    test_dir = dataset_root / "test"
    if not (test_dir / "rgb").is_dir():
        raise GradeError(f"{test_dir}/rgb does not exist: {dataset_root} is not a MiniScapes-layout dataset")
    missing = [m for m in ("semseg", "depth") if not (test_dir / m).is_dir()]
    if missing:
        raise GradeError(f"{test_dir} has no {' or '.join(missing)} labels, so it cannot be graded here "
                         "(MiniScapes' test split ships rgb only; the synthetic dataset keeps test labels)")
    return list_indices(test_dir / "rgb", ".jpg")


def _cropped(label: Any, shape: tuple[int, int], index: int, what: str) -> Any:
    import torch

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
    # Before torch is imported (it alone maps most of a GiB): a hostile archive is refused cheaply.
    problems = directory_problems(submission)
    if problems:
        raise GradeError("refusing the submission:\n  " + "\n  ".join(problems))
    from mtl.data.miniscapes import DatasetError

    try:
        return _grade(submission, dataset_root)
    except DatasetError as exc:
        raise GradeError(str(exc)) from exc


def _grade(submission: Path, dataset_root: Path) -> dict[str, float]:
    import torch

    from mtl.data.miniscapes import read_depth, read_semseg, sample_path
    from mtl.train.metrics import MetricAccumulator

    indices = test_indices_with_labels(dataset_root)
    problems = validate_submission(submission, test_indices=indices)
    if problems:
        raise GradeError("invalid submission:\n  " + "\n  ".join(problems))
    metrics = MetricAccumulator("cpu")
    try:
        archive = open_zip(submission, str(submission))
    except ArchiveError as exc:
        raise GradeError(str(exc)) from exc
    with archive:
        for index in indices:
            try:
                semseg, depth = read_prediction(archive, index)
            except ArchiveError as exc:
                raise GradeError(str(exc)) from exc
            gt_semseg = _cropped(read_semseg(sample_path(dataset_root, "test", "semseg", index)), semseg.shape, index,
                                 "predictions/semseg")
            gt_depth = _cropped(read_depth(sample_path(dataset_root, "test", "depth", index)), depth.shape, index,
                                "predictions/depth")
            metrics.update_semseg(torch.from_numpy(semseg.astype("int64")), gt_semseg.long())
            metrics.update_depth(torch.from_numpy(depth)[None], gt_depth[None])
    return metrics.compute()


def _is_dataset_key(key: str) -> bool:
    return key == "dataset" or key.startswith("synthetic_")


def trained_dataset_root(submission: str | Path) -> tuple[Path, str]:
    """(dataset folder, how it was found) of the run that wrote ``submission``: the dataset keys of its
    source.zip cmd.txt, and the folder from the run's config.yaml beside it when there is one. The
    synthetic dataset is rebuilt in its cache folder if missing (it is deterministic in its keys)."""
    from mtl.config import ConfigError, load_yaml, make_config
    from mtl.data import DatasetError, resolve_dataset_root

    submission = Path(submission)
    if not submission.is_file():
        raise GradeError(f"submission {submission} does not exist")
    problems = directory_problems(submission)
    if problems:
        raise GradeError("refusing the submission:\n  " + "\n  ".join(problems))
    try:
        with open_zip(submission, str(submission)) as archive:
            recorded = {k: v for k, v in read_cmd(archive, str(submission)).items() if _is_dataset_key(k)}
    except ArchiveError as exc:
        raise GradeError(f"{exc}; pass --dataset-root to name the dataset") from exc
    if "dataset" not in recorded:
        raise GradeError(f"{submission}: source.zip cmd.txt does not record the dataset; pass --dataset-root")
    values, how = dict(recorded), f"the dataset recorded in {submission.name}'s source.zip cmd.txt"
    config_path = RunDirectory(submission.parent).config_path
    if config_path.is_file():
        try:
            config = load_yaml(config_path)
        except ConfigError as exc:
            raise GradeError(f"{exc}; pass --dataset-root to name the dataset") from exc
        differing = sorted(k for k in recorded if k in config and config[k] != recorded[k])
        if differing:
            raise GradeError(f"{config_path} and {submission.name}'s cmd.txt disagree on {', '.join(differing)}: "
                             "the archive is not this run's; pass --dataset-root")
        if config.get("dataset_root"):
            values["dataset_root"] = config["dataset_root"]
            how = f"dataset_root of {config_path}"
    try:
        cfg = make_config(values, source=f"{submission} cmd.txt")
        if cfg.dataset != "synthetic" and cfg.dataset_root is None:
            raise GradeError(f"{submission} was trained on dataset {cfg.dataset!r}, whose folder is not recorded "
                             f"in the archive (no config.yaml beside it); pass --dataset-root")
        if cfg.dataset == "synthetic" and cfg.dataset_root is None:
            how = f"the synthetic dataset of {submission.name}'s cmd.txt, cached under its synthetic_* keys"
        return resolve_dataset_root(cfg, splits=("test",)), how
    except (ConfigError, DatasetError) as exc:
        raise GradeError(f"{exc} (the dataset of {submission}); pass --dataset-root") from exc
