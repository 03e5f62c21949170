"""submission.zip: write it, validate it, read its predictions back.

Structure (docs/DESIGN.md §5): ``predictions/semseg/<i>.png``, ``predictions/depth/<i>.png`` for
every test image, ``checkpoints/<name>.ckpt`` (the single best-grader checkpoint), ``source.zip``
(the ``mtl/`` sources that ran plus ``cmd.txt``) and ``metrics.csv``. The archive is written once and
never repacked.

Reading is bounded (:mod:`mtl.safezip`) because a submission to validate or grade may be hostile, and
validating imports neither torch nor pandas: a hostile archive is refused before they are loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtl.config import TASK_NAMES, Config
from mtl.run.model import Packed
from mtl.run.trace import read_trace
from mtl.safezip import (
    CHUNK_BYTES,
    MAX_PNG_BYTES,
    MAX_SMALL_MEMBER_BYTES,
    MAX_SOURCE_ZIP_BYTES,
    ArchiveError,
    check_crcs,
    check_member,
    open_zip,
    read_member,
    read_png,
)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the mtl package
SOURCE_ZIP_CMD = "cmd.txt"
# Members of submission.zip beside the predictions and the checkpoint (docs/DESIGN.md §5).
SOURCE_MEMBER = "source.zip"
METRICS_MEMBER = "metrics.csv"
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
    import pandas as pd  # (lazy: validating and grading do not need it)

    frame = pd.DataFrame(read_trace(metrics_path))
    return frame.to_csv(index=False).encode()


def write_submission(path: Path, *, predictions_dir: Path, test_indices: list[int], checkpoint: Path,
                     checkpoint_name: str, source_zip: Path, metrics_path: Path,
                     tasks: tuple[str, ...] = ("semseg", "depth")) -> None:
    """Write submission.zip atomically from files already in the run directory (a single-task run's holds
    its task's predictions alone: the grader is not defined for it)."""
    from mtl.run.io import atomic_open  # (lazy: it imports torch, which validating does not need)

    with atomic_open(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in test_indices:
            for task in tasks:
                archive.write(predictions_dir / task / f"{index}.png", f"predictions/{task}/{index}.png")
        archive.write(checkpoint, f"checkpoints/{checkpoint_name}.ckpt", compress_type=zipfile.ZIP_STORED)
        archive.write(source_zip, SOURCE_MEMBER, compress_type=zipfile.ZIP_STORED)
        archive.writestr(METRICS_MEMBER, metrics_csv(metrics_path))


def read_prediction(archive: zipfile.ZipFile, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(semseg class ids uint8, depth metres float32) of test image ``index``; sizes and pixel counts are
    bounded before anything is inflated or decoded (:mod:`mtl.safezip`)."""
    from mtl.data.miniscapes import decode_depth  # (lazy: it imports torch)

    semseg = np.asarray(read_png(archive, f"predictions/semseg/{index}.png"))
    depth = decode_depth(np.asarray(read_png(archive, f"predictions/depth/{index}.png")))
    return semseg, depth


# cmd.txt is a few KiB of ``key: value`` lines.
MAX_CMD_BYTES = 1 << 20


def read_source_zip(archive: zipfile.ZipFile, label: str) -> tuple[list[str], bytes | None]:
    """(member names, cmd.txt or None) of a submission's source.zip, read bounded; the sources themselves
    are not inflated (only their names are checked)."""
    data = read_member(archive, SOURCE_MEMBER, MAX_SOURCE_ZIP_BYTES, label)
    inner_label = f"{label} member source.zip"
    with open_zip(io.BytesIO(data), inner_label) as source:
        names = source.namelist()
        cmd = read_member(source, SOURCE_ZIP_CMD, MAX_CMD_BYTES, inner_label) if SOURCE_ZIP_CMD in names else None
    return names, cmd


def read_cmd(archive: zipfile.ZipFile, label: str) -> dict[str, Any]:
    """The hyperparameters recorded in source.zip's cmd.txt (``key: <json>`` a line)."""
    _, cmd = read_source_zip(archive, label)
    if cmd is None:
        raise ArchiveError(f"{label}: source.zip has no {SOURCE_ZIP_CMD}")
    values = {}
    for number, line in enumerate(cmd.decode("utf-8", "replace").splitlines(), 1):
        key, sep, value = line.partition(": ")
        try:
            values[key] = json.loads(value) if sep else None
        except json.JSONDecodeError:
            sep = ""
        if not sep:
            raise ArchiveError(f"{label}: source.zip {SOURCE_ZIP_CMD} line {number} is not 'key: <json value>': "
                               f"{line[:80]!r}")
    return values


def prediction_indices(names: list[str], task: str) -> set[int]:
    prefix = f"predictions/{task}/"
    found = set()
    for name in names:
        stem = name[len(prefix):-len(".png")] if name.startswith(prefix) and name.endswith(".png") else ""
        if stem.isdigit():
            found.add(int(stem))
    return found


# The one best checkpoint (DeepLabV3+/ResNet-34 weights are ~100 MiB; with optimizer state ~300 MiB).
# Validating and grading never inflate it; the limit only bounds what a hostile directory may claim.
MAX_CHECKPOINT_BYTES = 4 << 30


def member_limit(name: str) -> int:
    """The most bytes member ``name`` of a submission.zip may inflate to."""
    if name.startswith("predictions/") and name.endswith(".png"):
        return MAX_PNG_BYTES
    if name == SOURCE_MEMBER:
        return MAX_SOURCE_ZIP_BYTES
    if name.startswith("checkpoints/"):
        return MAX_CHECKPOINT_BYTES
    return MAX_SMALL_MEMBER_BYTES


def directory_problems(path: str | Path) -> list[str]:
    """Limits broken by what the archive's central directory declares (duplicate names, each member's
    inflated size and compression ratio), found before a single member is inflated."""
    path = Path(path)
    try:
        archive = open_zip(path, str(path))
    except ArchiveError as exc:
        return [str(exc)]
    problems = []
    with archive:
        for info in archive.infolist():
            try:
                check_member(info, member_limit(info.filename), str(path))
            except ArchiveError as exc:
                problems.append(str(exc))
    return problems


def validate_submission(path: str | Path, test_indices: list[int] | None = None,
                        tasks: Sequence[str] = TASK_NAMES) -> list[str]:
    """Every problem with the archive's structure and predictions of ``tasks`` (a single-task run packs its
    task alone); an empty list means valid."""
    path = Path(path)
    problems = directory_problems(path)
    if problems:
        return problems  # hostile or unreadable: nothing more is read from it
    archive = open_zip(path, str(path))
    with archive:
        try:  # every member's CRC-32 first: a damaged archive is one finding, named as damage
            check_crcs(archive, member_limit, str(path))
        except ArchiveError as exc:
            return [str(exc)]
        names = archive.namelist()
        semseg, depth = prediction_indices(names, "semseg"), prediction_indices(names, "depth")
        expected = set(test_indices) if test_indices is not None else semseg | depth
        if not expected:
            problems.append(f"{path}: no predictions/semseg/<i>.png or predictions/depth/<i>.png members")
        for task, found in (("semseg", semseg), ("depth", depth)):
            if task not in tasks:
                continue
            missing = sorted(expected - found)
            if missing:
                problems.append(f"{path}: predictions/{task} lacks {len(missing)} test images, e.g. {missing[:5]}")
        checkpoints = [n for n in names if n.startswith("checkpoints/") and n.endswith(".ckpt")]
        if len(checkpoints) != 1:
            problems.append(f"{path}: expected exactly one checkpoints/<name>.ckpt, found {len(checkpoints)}")
        for member in (SOURCE_MEMBER, METRICS_MEMBER):
            if member not in names:
                problems.append(f"{path}: missing member {member}")
        if SOURCE_MEMBER in names:
            try:
                inner, _ = read_source_zip(archive, str(path))
                if SOURCE_ZIP_CMD not in inner or not any(n.startswith("mtl/") for n in inner):
                    problems.append(f"{path}: source.zip must hold mtl/ sources and {SOURCE_ZIP_CMD}")
            except ArchiveError as exc:
                problems.append(str(exc))
        for index in sorted(expected & semseg & depth):
            try:
                seg_img = read_png(archive, f"predictions/semseg/{index}.png", str(path))
                dep_img = read_png(archive, f"predictions/depth/{index}.png", str(path))
            except ArchiveError as exc:  # too big, damaged or not decodable: a finding, not a crash
                problems.append(str(exc))
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




def packed_record(path: str | Path, tasks: Sequence[str] = TASK_NAMES) -> Packed:
    """What a just-written submission.zip is, for the run's status: its size and sha256, once it validates
    (every member's CRC-32 and the structure, with the predictions of ``tasks``); ArchiveError naming what does
    not."""
    path = Path(path)
    problems = validate_submission(path, tasks=tasks)
    if problems:
        raise ArchiveError(f"{path} was written but does not validate: " + "; ".join(problems[:5]))
    size, digest = file_digest(path)
    return Packed(bytes=size, sha256=digest)


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def packed_problems(path: str | Path, packed: Packed | None, status_path: str | Path) -> list[str]:
    """Why a finished run's submission.zip cannot be counted or shipped: absent; not the file the trainer packed
    (its size or sha256 differ from ``packed``, recorded in ``status_path``); or, for a run whose status
    records no digest (older runs), damaged or invalid (:func:`validate_submission`). Empty when sound."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [f"{path}: is missing"]
    except OSError as exc:
        return [f"{path}: cannot be read ({exc.strerror or exc})"]
    if packed is None:
        return validate_submission(path)
    if size != packed.bytes:
        return [f"{path}: damaged archive: {size} bytes, but the trainer packed {packed.bytes} ({status_path} "
                "records them): cut short or replaced since"]
    try:
        _, digest = file_digest(path)
    except OSError as exc:
        return [f"{path}: cannot be read ({exc.strerror or exc})"]
    if digest != packed.sha256:
        return [f"{path}: damaged archive: its sha256 is not the one {status_path} recorded when the trainer "
                "packed it (bytes changed since)"]
    return []
