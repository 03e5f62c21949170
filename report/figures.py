"""Figures of one ablation entry (matplotlib, Agg), each written as PNG and PDF.

- ``curves``: validation grader, IoU and SI-logRMSE per epoch, one line per run (colour = variant).
- ``bars``: the best-step metrics per variant, mean over finished seeds with standard-deviation error bars.
- ``qualitative``: test images with each chosen run's predictions. The predictions are the PNGs a run
  wrote to ``predictions/`` (what its submission.zip holds), so no model is rebuilt; the input and the
  ground truth come from the dataset's test split, ground-truth columns only where that split has
  labels (the synthetic dataset does, MiniScapes does not).
- ``depth_histogram``: the distribution of ground-truth depth (the test split when it has labels, else
  the validation split) and of each chosen run's predicted depth, in metres and in log-metres, for the
  depth-unit question.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mtl.data.miniscapes import (  # noqa: E402
    DEPTH_MAX_M,
    DEPTH_MIN_M,
    list_indices,
    read_depth,
    read_rgb,
    read_semseg,
    sample_path,
)
from mtl.run.layout import RunDirectory  # noqa: E402
from mtl.train.visualize import DISPARITY_MAX, DISPARITY_MIN, colorize, disparity  # noqa: E402

METRIC_TITLES = {"grader": "grader (higher is better)", "iou": "IoU [%] (higher is better)",
                 "si_logrmse": "SI-logRMSE (lower is better)"}
FORMATS = ("png", "pdf")


class FigureError(ValueError):
    """A figure cannot be drawn from what is on disk; the message names the missing file or folder."""


def save(figure: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; the PDF without a creation date, so reruns are identical."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else {}
        figure.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    plt.close(figure)
    return paths


def _variant_colours(variants: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    return {v: cmap(i % cmap.N) for i, v in enumerate(variants)}


# ---------------------------------------------------------------------------------------- curves
def curves(points: pd.DataFrame, runs: pd.DataFrame, out_dir: Path, stem: str, title: str = "") -> list[Path]:
    """Validation curves of every run in ``runs`` (the ordered run table) from the ``points`` frame."""
    variants = list(dict.fromkeys(runs["variant"]))
    colours = _variant_colours(variants)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labelled: set[str] = set()
    for _, run in runs.iterrows():
        series = points[points["run"] == run["run"]].sort_values("step")
        if series.empty:
            continue
        label = None if run["variant"] in labelled else str(run["variant"])
        labelled.add(run["variant"])
        x = series["epoch"].to_numpy(dtype=float)
        for axis, metric in zip(axes, METRIC_TITLES):
            axis.plot(x, series[metric].to_numpy(dtype=float), color=colours[run["variant"]], marker=".",
                      linewidth=1.2, alpha=0.85, label=label if axis is axes[0] else None)
    for axis, text in zip(axes, METRIC_TITLES.values()):
        axis.set_title(text, fontsize=10)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    if labelled:
        figure.legend(loc="lower center", ncol=min(len(labelled), 5), fontsize=8, frameon=False,
                      bbox_to_anchor=(0.5, -0.02 - 0.05 * math.ceil(len(labelled) / 5)))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save(figure, out_dir, stem)


# ---------------------------------------------------------------------------------------- bars
def bars(summary: pd.DataFrame, out_dir: Path, stem: str, title: str = "") -> list[Path]:
    """Best-step metrics per variant (``summary``: the variant summary of report.tables, means and
    standard deviations over finished seeds; a variant with one seed has no error bar)."""
    variants = [str(v) for v in summary["variant"]]
    colours = _variant_colours(variants)
    figure, axes = plt.subplots(1, 3, figsize=(max(9.0, 1.1 * len(variants) * 3), 3.8))
    x = np.arange(len(variants))
    for axis, (metric, text) in zip(axes, METRIC_TITLES.items()):
        means = summary[metric].to_numpy(dtype=float)
        stds = summary[f"{metric}_std"].to_numpy(dtype=float)  # NaN (one seed): no error bar
        axis.bar(x, np.nan_to_num(means, nan=0.0), yerr=stds, capsize=3,
                 color=[colours[v] for v in variants], edgecolor="black", linewidth=0.5)
        for position, mean in zip(x, means):
            if not math.isfinite(mean):
                axis.text(position, 0, "no result", rotation=90, ha="center", va="bottom", fontsize=7)
        axis.set_xticks(x, variants, rotation=30, ha="right", fontsize=8)
        axis.set_title(text, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save(figure, out_dir, stem)


# ---------------------------------------------------------------------------------------- images
def _depth_image(axis: plt.Axes, depth_m: np.ndarray) -> None:
    # The training panels' disparity scale (mtl.train.visualize), in colour; invalid pixels left blank.
    shown = np.where(depth_m > 0, disparity(depth_m), np.nan)
    axis.imshow(shown, cmap="magma", vmin=DISPARITY_MIN, vmax=DISPARITY_MAX, interpolation="nearest")


def has_test_labels(dataset_root: Path) -> bool:
    return (dataset_root / "test" / "semseg").is_dir() and (dataset_root / "test" / "depth").is_dir()


def prediction_paths(run_dir: Path, index: int) -> tuple[Path, Path]:
    run = RunDirectory(run_dir)
    return run.prediction("semseg", index), run.prediction("depth", index)


def predicted_indices(run_dir: Path) -> list[int]:
    folder = RunDirectory(run_dir).prediction_dir("semseg")
    if not folder.is_dir():
        raise FigureError(f"run {run_dir} has no predictions/semseg folder (it has not finished)")
    return list_indices(folder, ".png")


def qualitative(runs: Sequence[tuple[str, Path]], dataset_root: Path, indices: Sequence[int], out_dir: Path,
                stem: str, title: str = "") -> list[Path]:
    """Rows: test images ``indices``; columns: input, ground-truth segmentation (when labelled), each
    run's segmentation, ground-truth depth (when labelled), each run's depth. ``runs``: (label, run dir)."""
    if not runs:
        raise FigureError("qualitative figure: no run with predictions to show")
    labelled = has_test_labels(dataset_root)
    columns: list[tuple[str, Any]] = [("input", None)]
    columns += [("true segmentation", None)] if labelled else []
    columns += [(f"{label}\nsegmentation", run_dir) for label, run_dir in runs]
    columns += [("true depth", None)] if labelled else []
    columns += [(f"{label}\ndepth", run_dir) for label, run_dir in runs]
    sample = read_rgb(sample_path(dataset_root, "test", "rgb", indices[0]))
    aspect = sample.shape[1] / sample.shape[0]
    figure, axes = plt.subplots(len(indices), len(columns), squeeze=False,
                                figsize=(2.0 * aspect * len(columns), 2.0 * len(indices) + 0.6))
    for row, index in enumerate(indices):
        for col, (name, run_dir) in enumerate(columns):
            axis = axes[row][col]
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=8)
            if col == 0:
                axis.set_ylabel(f"test {index}", fontsize=8)
            if name == "input":
                axis.imshow(read_rgb(sample_path(dataset_root, "test", "rgb", index)))
            elif name == "true segmentation":
                axis.imshow(colorize(read_semseg(sample_path(dataset_root, "test", "semseg", index))),
                            interpolation="nearest")
            elif name == "true depth":
                _depth_image(axis, read_depth(sample_path(dataset_root, "test", "depth", index)))
            else:
                semseg_path, depth_path = prediction_paths(run_dir, index)
                for path in (semseg_path, depth_path):
                    if not path.is_file():
                        raise FigureError(f"prediction {path} does not exist")
                if name.endswith("segmentation"):
                    axis.imshow(colorize(read_semseg(semseg_path)), interpolation="nearest")
                else:
                    _depth_image(axis, read_depth(depth_path))
    note = "" if labelled else " (the test split has no labels: predictions only)"
    figure.suptitle((title + note) if title else note.strip(" ()"), fontsize=10)
    figure.tight_layout()
    return save(figure, out_dir, stem)


# ---------------------------------------------------------------------------------------- depth histogram
def _valid_depths(paths: Sequence[Path]) -> np.ndarray:
    values = [read_depth(p) for p in paths]
    flat = np.concatenate([v.ravel() for v in values]) if values else np.empty(0, np.float32)
    return flat[flat > 0]


def depth_histogram(runs: Sequence[tuple[str, Path]], dataset_root: Path, out_dir: Path, stem: str,
                    title: str = "", max_images: int = 200) -> list[Path]:
    """Depth distributions (density) of ground truth and of each run's test predictions, in metres and
    log-metres; at most ``max_images`` images of each, the first by index."""
    gt_split = "test" if has_test_labels(dataset_root) else "val"
    depth_dir = dataset_root / gt_split / "depth"
    if not depth_dir.is_dir():
        raise FigureError(f"dataset {dataset_root} has no {gt_split}/depth folder for the ground-truth histogram")
    gt_paths = [sample_path(dataset_root, gt_split, "depth", i) for i in list_indices(depth_dir, ".png")[:max_images]]
    series = [(f"ground truth ({gt_split} split)", _valid_depths(gt_paths))]
    for label, run_dir in runs:
        indices = predicted_indices(run_dir)[:max_images]
        series.append(
            (f"{label} (test predictions)", _valid_depths([prediction_paths(run_dir, i)[1] for i in indices]))
        )
    figure, (metres_axis, log_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
    metre_bins = np.linspace(DEPTH_MIN_M, DEPTH_MAX_M, 75)
    log_bins = np.linspace(math.log(DEPTH_MIN_M), math.log(DEPTH_MAX_M), 75)
    for number, (label, values) in enumerate(series):
        style = (
            dict(histtype="stepfilled", alpha=0.3, color="grey")
            if number == 0
            else dict(histtype="step", linewidth=1.4)
        )
        metres_axis.hist(values, bins=metre_bins, density=True, label=label, **style)
        log_axis.hist(np.log(values), bins=log_bins, density=True, label=label, **style)
    metres_axis.set_xlabel("depth [m]")
    metres_axis.set_yscale("log")
    log_axis.set_xlabel("ln(depth [m])")
    for axis in (metres_axis, log_axis):
        axis.set_ylabel("density")
        axis.grid(alpha=0.3)
    log_axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save(figure, out_dir, stem)
