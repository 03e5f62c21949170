"""submission.zip: write it, validate it, read its predictions back.

Structure (DESIGN.md section 3): ``predictions/semseg/<i>.png``, ``predictions/depth/<i>.png`` for
every test image, ``checkpoints/<name>.ckpt`` (the single best-grader checkpoint), ``source.zip``
(the ``mtl/`` sources that ran plus ``cmd.txt``) and ``metrics.csv``. The archive is written once and
never repacked.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mtl.config import Config
from mtl.data.miniscapes import decode_depth
from mtl.io import atomic_open
from mtl.rundir import read_jsonl

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ZIP_CMD = "cmd.txt"
# A fixed timestamp keeps source.zip byte-identical for identical sources.
_ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)


# The suite's orchestration (mtl/ablate) never runs inside a training, so editing it must not make
# interrupted runs un-resumable.
NOT_TRAINING_CODE = ("__pycache__", "ablate")


def source_files() -> list[Path]:
    """The sources a training runs: ``mtl/`` without the suite's orchestration."""
    return sorted(p for p in PACKAGE_DIR.rglob("*.py")
                  if not set(p.relative_to(PACKAGE_DIR).parts[:-1]) & set(NOT_TRAINING_CODE))


def code_version() -> str:
    """sha256 over the ``mtl/`` sources (paths and contents): what ran, independent of git."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(str(path.relative_to(PACKAGE_DIR.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cmd_text(cfg: Config) -> str:
    """The hyperparameters, ``key: value`` a line, run-invariant keys (paths, workers, ...) left out."""
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in cfg.hyperparameters().items())


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def build_source_zip(cfg: Config) -> bytes:
    members = {str(p.relative_to(PACKAGE_DIR.parent)): p.read_bytes() for p in source_files()}
    members[SOURCE_ZIP_CMD] = cmd_text(cfg).encode()
    return _zip_bytes(members)


def source_zip_differences(source_zip: Path, cfg: Config) -> list[str]:
    """Why a run directory's ``source.zip`` does not match the code and hyperparameters about to run."""
    with zipfile.ZipFile(source_zip) as archive:
        stored = {n: archive.read(n) for n in archive.namelist()}
    problems = []
    stored_cmd = stored.pop(SOURCE_ZIP_CMD, b"").decode()
    if stored_cmd != cmd_text(cfg):
        old = dict(line.split(": ", 1) for line in stored_cmd.splitlines() if ": " in line)
        new = dict(line.split(": ", 1) for line in cmd_text(cfg).splitlines())
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                problems.append(f"hyperparameter {key}: run has {old.get(key)}, now {new.get(key)}")
    current = {str(p.relative_to(PACKAGE_DIR.parent)): p.read_bytes() for p in source_files()}
    for name in sorted(set(stored) | set(current)):
        if stored.get(name) != current.get(name):
            problems.append(f"code {name} changed")
    return problems


def metrics_csv(metrics_path: Path) -> bytes:
    frame = pd.DataFrame(read_jsonl(metrics_path))
    return frame.to_csv(index=False).encode()


def write_submission(path: Path, *, predictions_dir: Path, test_indices: list[int], checkpoint: Path,
                     checkpoint_name: str, source_zip: Path, metrics_path: Path) -> None:
    """Write submission.zip atomically from files already in the run directory."""
    with atomic_open(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in test_indices:
            for task in ("semseg", "depth"):
                archive.write(predictions_dir / task / f"{index}.png", f"predictions/{task}/{index}.png")
        archive.write(checkpoint, f"checkpoints/{checkpoint_name}.ckpt", compress_type=zipfile.ZIP_STORED)
        archive.write(source_zip, "source.zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("metrics.csv", metrics_csv(metrics_path))


def _read_png(archive: zipfile.ZipFile, name: str) -> Image.Image:
    image = Image.open(io.BytesIO(archive.read(name)))
    image.load()
    return image


def read_prediction(archive: zipfile.ZipFile, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(semseg class ids uint8, depth metres float32) of test image ``index``."""
    semseg = np.asarray(_read_png(archive, f"predictions/semseg/{index}.png"))
    depth = decode_depth(np.asarray(_read_png(archive, f"predictions/depth/{index}.png")))
    return semseg, depth


def prediction_indices(names: list[str], task: str) -> set[int]:
    prefix = f"predictions/{task}/"
    found = set()
    for name in names:
        stem = name[len(prefix):-len(".png")] if name.startswith(prefix) and name.endswith(".png") else ""
        if stem.isdigit():
            found.add(int(stem))
    return found


def validate_submission(path: str | Path, test_indices: list[int] | None = None) -> list[str]:
    """Every problem with the archive's structure and predictions; an empty list means valid."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return [f"{path}: not a readable zip archive ({exc})"]
    problems: list[str] = []
    with archive:
        names = archive.namelist()
        semseg, depth = prediction_indices(names, "semseg"), prediction_indices(names, "depth")
        expected = set(test_indices) if test_indices is not None else semseg | depth
        if not expected:
            problems.append(f"{path}: no predictions/semseg/<i>.png or predictions/depth/<i>.png members")
        for task, found in (("semseg", semseg), ("depth", depth)):
            missing = sorted(expected - found)
            if missing:
                problems.append(f"{path}: predictions/{task} lacks {len(missing)} test images, e.g. {missing[:5]}")
        checkpoints = [n for n in names if n.startswith("checkpoints/") and n.endswith(".ckpt")]
        if len(checkpoints) != 1:
            problems.append(f"{path}: expected exactly one checkpoints/<name>.ckpt, found {len(checkpoints)}")
        for member in ("source.zip", "metrics.csv"):
            if member not in names:
                problems.append(f"{path}: missing member {member}")
        if "source.zip" in names:
            try:
                with zipfile.ZipFile(io.BytesIO(archive.read("source.zip"))) as source:
                    inner = source.namelist()
                if SOURCE_ZIP_CMD not in inner or not any(n.startswith("mtl/") for n in inner):
                    problems.append(f"{path}: source.zip must hold mtl/ sources and {SOURCE_ZIP_CMD}")
            except zipfile.BadZipFile:
                problems.append(f"{path}: source.zip is not a zip archive")
        for index in sorted(expected & semseg & depth):
            try:
                seg_img = _read_png(archive, f"predictions/semseg/{index}.png")
                dep_img = _read_png(archive, f"predictions/depth/{index}.png")
            except Exception as exc:  # noqa: BLE001 - any decoding failure is a finding, not a crash
                problems.append(f"{path}: prediction {index} does not decode ({exc})")
                continue
            if seg_img.mode != "P":
                problems.append(f"{path}: predictions/semseg/{index}.png is mode {seg_img.mode}, expected P")
            elif np.asarray(seg_img).max() > 18:
                problems.append(f"{path}: predictions/semseg/{index}.png has class ids above 18")
            if dep_img.mode != "L":
                problems.append(f"{path}: predictions/depth/{index}.png is mode {dep_img.mode}, expected L")
            elif np.asarray(dep_img).min() < 1:
                problems.append(f"{path}: predictions/depth/{index}.png has 0 (invalid) values")
            if seg_img.size != dep_img.size:
                problems.append(f"{path}: prediction {index} semseg and depth sizes differ")
    return problems


def submission_summary(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return {"members": len(names), "test_images": len(prediction_indices(names, "semseg"))}
