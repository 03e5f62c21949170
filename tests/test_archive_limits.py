"""Hostile archives are refused, in bounded memory, with a message naming archive, member and limit:
a zip bomb through ``mtl-ablate grade`` (peak memory of the command measured), a PNG declaring 144 Mpx,
duplicate member names, a suspicious compression ratio, zips nested too deep and too many bytes for the
leak scan. Also: ``grade`` without ``--dataset-root`` grades against the run's own dataset."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from mtl.config import make_config
from mtl.data.miniscapes import write_depth, write_rgb, write_semseg
from mtl.safezip import MAX_COMPRESSION_RATIO, MAX_PNG_BYTES, MAX_PNG_PIXELS, ArchiveError, open_zip, read_member
from mtl.train.submission import build_source_zip, write_submission
from report import leaks
from report.grade import GradeError, grade
from report.leaks import scan_bytes
from support import REPO, TINY, ablate_here

MiB = 1 << 20
HEIGHT, WIDTH = 64, 96  # multiples of 32: predictions cover the whole image
DATASET_KEYS = {k: v for k, v in TINY.items() if k == "dataset" or k.startswith("synthetic_")}


def _dataset(root: Path, count: int = 2) -> Path:
    for modality in ("rgb", "semseg", "depth"):
        (root / "test" / modality).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_rgb(root / "test" / "rgb" / f"{index}.jpg", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
        write_semseg(root / "test" / "semseg" / f"{index}.png", np.zeros((HEIGHT, WIDTH), np.uint8))
        write_depth(root / "test" / "depth" / f"{index}.png", np.full((HEIGHT, WIDTH), 20.0))
    return root


def _submission(run_dir: Path, count: int = 2, values: dict | None = None, size=(HEIGHT, WIDTH)) -> Path:
    """A real submission.zip (mtl.train.submission's writer): all-road predictions, depth 20 m."""
    cfg = make_config(values or DATASET_KEYS)
    for task in ("semseg", "depth"):
        (run_dir / "predictions" / task).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_semseg(run_dir / "predictions" / "semseg" / f"{index}.png", np.zeros(size, np.uint8))
        write_depth(run_dir / "predictions" / "depth" / f"{index}.png", np.full(size, 20.0))
    (run_dir / "best.pt").write_bytes(b"weights")
    (run_dir / "source.zip").write_bytes(build_source_zip(cfg))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "val/grader": 1.0}) + "\n")
    path = run_dir / "submission.zip"
    write_submission(path, predictions_dir=run_dir / "predictions", test_indices=list(range(count)),
                     checkpoint=run_dir / "best.pt", checkpoint_name="best", source_zip=run_dir / "source.zip",
                     metrics_path=run_dir / "metrics.jsonl")
    return path


def _rewrite(source: Path, target: Path, replace: dict[str, object]) -> Path:
    """Copy ``source`` to ``target`` with members replaced: bytes, or a callable writing to an open member."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            content = replace.get(info.filename)
            if callable(content):
                with new.open(info.filename, "w", force_zip64=True) as member:
                    content(member)
            else:
                new.writestr(info.filename, content if content is not None else old.read(info.filename))
    return target


def _zeros(total: int, chunk: int = 16 * MiB):
    def write(member) -> None:
        block = bytes(chunk)
        for _ in range(total // chunk):
            member.write(block)
    return write


# Runs the command as its own child and reports that child's peak RSS, as /usr/bin/time -v does. The
# indirection matters: a process forked straight from pytest inherits pytest's (torch-sized) peak.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(f"PEAK_RSS_KB {usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(args: list[str]) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MiB) of ``python -m mtl.suite ARGS``, that process alone."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "mtl.suite", *args],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    stderr, _, peak = result.stderr.rpartition("PEAK_RSS_KB ")
    return result.returncode, stderr, int(peak) / 1024  # Linux reports kilobytes


@pytest.mark.slow  # mtl-ablate grade in a subprocess (a torch import each)
def test_grade_refuses_a_zip_bomb_by_size_in_bounded_memory(tmp_path):
    dataset = _dataset(tmp_path / "data")
    good = _submission(tmp_path / "run")
    bomb = _rewrite(good, tmp_path / "bomb.zip", {"predictions/semseg/0.png": _zeros(1 << 30)})
    assert bomb.stat().st_size < 4 * MiB  # 1 GiB of zeros deflates ~1000-fold
    with zipfile.ZipFile(bomb) as archive:
        assert archive.getinfo("predictions/semseg/0.png").file_size == 1 << 30
    code, stderr, peak_mib = _run_measured(["grade", str(bomb), "--dataset-root", str(dataset)])
    assert code == 2, stderr
    assert (f"{bomb}: member predictions/semseg/0.png inflates to {1 << 30} bytes, over the limit of "
            f"{MAX_PNG_BYTES} bytes") in stderr
    # Refused from the zip directory, before anything is inflated or torch is imported: far below the
    # 1 GiB member (reading it whole took 2.7 GB) and below torch's own import footprint.
    assert peak_mib < 400, f"grade peaked at {peak_mib:.0f} MiB"


def _png_header_only(width: int, height: int) -> bytes:
    """A valid 8-bit greyscale PNG of width x height zeros, built row by row (never held decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    compressor, idat, row = zlib.compressobj(9), io.BytesIO(), bytes(width + 1)  # filter byte + pixels
    for _ in range(height):
        idat.write(compressor.compress(row))
    idat.write(compressor.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat.getvalue()) + chunk(b"IEND", b""))


def test_a_144_mpx_png_is_refused_before_decoding(tmp_path):
    dataset = _dataset(tmp_path / "data")
    huge = _png_header_only(12000, 12000)
    assert len(huge) < MAX_PNG_BYTES  # within the byte limit: only the pixel limit stops it
    bad = _rewrite(_submission(tmp_path / "run"), tmp_path / "huge.zip", {"predictions/depth/1.png": huge})
    with pytest.raises(GradeError) as caught:
        grade(bad, dataset)
    assert (f"{bad}: member predictions/depth/1.png is 12000x12000 = 144000000 pixels, over the limit of "
            f"{MAX_PNG_PIXELS} pixels for a prediction; refused before decoding") in str(caught.value)


def test_duplicate_member_names_are_refused(tmp_path):
    dataset = _dataset(tmp_path / "data")
    good = _submission(tmp_path / "run")
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(good) as old, zipfile.ZipFile(twice, "w") as new, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name", and writes it anyway
        for info in old.infolist():
            new.writestr(info, old.read(info))
        new.writestr("predictions/semseg/0.png", old.read("predictions/semseg/1.png"))
    with pytest.raises(GradeError, match=r"member predictions/semseg/0.png appears more than once"):
        grade(twice, dataset)
    assert grade(good, dataset)["iou_class/road"] == pytest.approx(100.0)  # the same archive, once each


def test_a_suspicious_compression_ratio_is_refused_before_inflating(tmp_path):
    path = tmp_path / "ratio.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metrics.csv", bytes(8 * MiB))  # within the size limit, ~1000-fold
    with open_zip(path, "ratio.zip") as archive:
        with pytest.raises(ArchiveError, match=rf"ratio.zip: member metrics.csv inflates \d+-fold .* over the "
                                               rf"compression ratio limit of {MAX_COMPRESSION_RATIO}"):
            read_member(archive, "metrics.csv", 64 * MiB)
        with pytest.raises(ArchiveError, match=r"over the limit of 1024 bytes"):
            read_member(archive, "metrics.csv", 1024)


def _nested(depth: int, payload: bytes) -> bytes:
    data = payload
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"level{level}.zip" if level else "notes.txt", data)
        data = buffer.getvalue()
    return data


def test_leak_scan_limits_nesting_depth(tmp_path):
    secret = b"AWS key AKIAABCDEFGHIJKLMNOP\n"
    findings = scan_bytes(_nested(leaks.MAX_NESTING_DEPTH, secret), "ok.zip")
    assert [f.kind for f in findings] == ["AWS access key id"]  # as deep as allowed: still scanned
    assert findings[0].member.count("!") == leaks.MAX_NESTING_DEPTH - 1
    with pytest.raises(ArchiveError, match=rf"deep.zip member .*: a zip nested {leaks.MAX_NESTING_DEPTH + 1} deep, "
                                           rf"over the limit of {leaks.MAX_NESTING_DEPTH}"):
        scan_bytes(_nested(leaks.MAX_NESTING_DEPTH + 1, secret), "deep.zip")
    path = tmp_path / "deep.zip"
    path.write_bytes(_nested(leaks.MAX_NESTING_DEPTH + 1, secret))
    with pytest.raises(ArchiveError, match="over the limit"):
        leaks.scan_file(path, "deep.zip")


def test_leak_scan_limits_total_inflated_bytes(tmp_path, monkeypatch):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(8):
            archive.writestr(f"part{index}.txt", b"a plain line of text\n" * (256 * 1024 // 21 + 1))
    assert leaks.scan_file(path) == []
    monkeypatch.setattr(leaks, "MAX_SCAN_BYTES", 1 * MiB)  # the real limit (1 GiB) would make a slow test
    with pytest.raises(ArchiveError, match=r"many.zip: more than 1048576 bytes inflated while scanning it for "
                                           r"secrets \(reached at member part3.txt\)"):
        leaks.scan_file(path, "many.zip")


def test_leak_scan_refuses_a_bomb_member(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("notes.txt", "w", force_zip64=True) as member:
        _zeros(256 * MiB)(member)
    # Over the size read whole and ~1000-fold: refused from the directory entry, before inflating it.
    with pytest.raises(
        ArchiveError, match=rf"bomb.zip: member notes.txt inflates \d+-fold \(\d+ -> {256 * MiB} bytes\)"
    ):
        leaks.scan_file(path, "bomb.zip")


@pytest.mark.slow  # builds the synthetic dataset
def test_grade_defaults_to_the_synthetic_dataset_the_run_was_trained_on(tmp_path, cache_dir, capsys):
    from mtl.data import resolve_dataset_root

    submission = _submission(tmp_path / "run", count=TINY["synthetic_num_test"])
    expected_root = resolve_dataset_root(make_config(DATASET_KEYS))  # the cache folder keyed by synthetic_*
    result = ablate_here(capsys, "grade", str(submission), "--json")
    assert result.returncode == 0, result.stderr
    assert f"grading {submission} against {expected_root} (the synthetic dataset of submission.zip's cmd.txt" \
        in result.stderr
    assert json.loads(result.stdout)["grader"] == grade(submission, expected_root)["grader"]


def test_grade_uses_the_dataset_root_of_the_run_config_beside_the_archive(tmp_path, capsys):
    dataset = _dataset(tmp_path / "data")
    values = {"dataset": "miniscapes"}
    submission = _submission(tmp_path / "run", values=values)
    result = ablate_here(capsys, "grade", str(submission))
    assert result.returncode == 2
    assert "was trained on dataset 'miniscapes', whose folder is not recorded in the archive" in result.stderr
    assert "pass --dataset-root" in result.stderr
    (tmp_path / "run" / "config.yaml").write_text(f"dataset: miniscapes\ndataset_root: {dataset}\n")
    result = ablate_here(capsys, "grade", str(submission))
    assert result.returncode == 0, result.stderr
    assert f"against {dataset} (dataset_root of {tmp_path / 'run' / 'config.yaml'})" in result.stderr
    assert result.stdout.startswith("grader ")
    other = _dataset(tmp_path / "other")
    result = ablate_here(capsys, "grade", str(submission), "--dataset-root", str(other))  # the override wins
    assert result.returncode == 0 and f"against {other} (--dataset-root)" in result.stderr


def test_a_directory_that_understates_a_member_is_caught_not_trusted(tmp_path):
    """The central directory claims 100 bytes for a member that inflates to 8 MiB: the read stops at
    the claimed size and the member is refused as damaged, not returned and not inflated whole."""
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metrics.csv", b"step,grader\n" * (8 * MiB // 12))
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = struct.pack("<I", 100)  # uncompressed size in the central directory
    path.write_bytes(bytes(data))
    with open_zip(path, "liar.zip") as archive:
        assert archive.getinfo("metrics.csv").file_size == 100
        with pytest.raises(ArchiveError, match=r"liar.zip: damaged archive: member metrics.csv: its data does not"):
            read_member(archive, "metrics.csv", 64 * MiB)
