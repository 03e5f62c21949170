"""Damaged archives take one error path: whatever zipfile or zlib raises under it (a flipped byte in deflated
data, a flipped byte in the stored checkpoint, an encrypted member, a zip version Python cannot read, a
file cut short or padded), every reader -- validation, ``grade``, the leak scan, ``export`` -- says "damaged
archive", names the member and what is wrong, and no command shows a traceback."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from mtl.safezip import ArchiveError
from mtl.train.submission import validate_submission
from report import leaks
from support import ablate_here
from test_archive_limits import _dataset, _submission

PNG = "predictions/semseg/0.png"  # deflated
CHECKPOINT = "checkpoints/best.ckpt"  # stored


def central_entries(data: bytes) -> dict[str, int]:
    """Member name -> offset of its central directory entry."""
    end = data.rfind(b"PK\x05\x06")
    count, _, offset = struct.unpack("<HII", data[end + 10:end + 20])
    entries = {}
    for _ in range(count):
        name_length, extra_length, comment_length = struct.unpack("<HHH", data[offset + 28:offset + 34])
        entries[data[offset + 46:offset + 46 + name_length].decode()] = offset
        offset += 46 + name_length + extra_length + comment_length
    return entries


def local_header(data: bytes, member: str) -> int:
    entry = central_entries(data)[member]
    return struct.unpack("<I", data[entry + 42:entry + 46])[0]


def data_start(data: bytes, member: str) -> int:
    header = local_header(data, member)
    name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])
    return header + 30 + name_length + extra_length


def flip(member: str, at: int = 5) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:
        data[data_start(data, member) + at] ^= 0xFF
    return damage


def encrypt(member: str) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:  # the "encrypted" flag, in the local header and the directory
        data[local_header(data, member) + 6] |= 1
        data[central_entries(data)[member] + 8] |= 1
    return damage


def needs_version(member: str, version: int = 66) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:
        struct.pack_into("<H", data, central_entries(data)[member] + 6, version)
    return damage


def cut(fraction: float) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:
        del data[int(len(data) * fraction):]
    return damage


def pad(extra: int) -> Callable[[bytearray], None]:
    def damage(data: bytearray) -> None:  # `truncate -s` past the end: zeros
        data.extend(bytes(extra))
    return damage


# (damage, the member the message must name or None, words the message must hold)
DAMAGES = {
    "flipped deflate byte": (flip(PNG), PNG, "compressed data is corrupt"),
    "flipped checkpoint byte": (flip(CHECKPOINT, 2), CHECKPOINT, "CRC-32"),
    "encrypted member": (encrypt(PNG), PNG, "encrypted"),
    "version 6.6": (needs_version(PNG), None, "zip file version 6.6"),
    "cut in half": (cut(0.5), None, "damaged archive"),
    "cut to nothing": (cut(0.0), None, "damaged archive"),
}


def damaged_copy(source: Path, target: Path, kind: str) -> Path:
    data = bytearray(source.read_bytes())
    DAMAGES[kind][0](data)
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    return _submission(tmp_path_factory.mktemp("sound") / "run")


@pytest.mark.parametrize("kind", DAMAGES)
def test_validation_names_the_damaged_member_and_what_is_wrong(sound, tmp_path, kind):
    path = damaged_copy(sound, tmp_path / "submission.zip", kind)
    problems = validate_submission(path)
    _, member, words = DAMAGES[kind]
    assert len(problems) == 1, problems
    assert "damaged archive" in problems[0] and words in problems[0], problems[0]
    assert member is None or f"member {member}" in problems[0], problems[0]


@pytest.mark.parametrize("kind", DAMAGES)
def test_grade_says_damaged_archive_without_a_traceback(sound, tmp_path, kind, capsys):
    path = damaged_copy(sound, tmp_path / "submission.zip", kind)
    dataset = _dataset(tmp_path / "data")
    result = ablate_here(capsys, "grade", str(path), "--dataset-root", str(dataset))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert "damaged archive" in result.stderr and DAMAGES[kind][2] in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["encrypted member", "version 6.6", "flipped deflate byte"])
def test_the_leak_scan_says_damaged_archive(sound, tmp_path, kind):
    path = damaged_copy(sound, tmp_path / "submission.zip", kind)
    with pytest.raises(ArchiveError, match="damaged archive"):
        leaks.scan_file(path)


def test_a_big_member_that_starts_as_a_zip_but_is_damaged_is_named_as_damage(tmp_path, monkeypatch):
    """A checkpoint (itself a zip) too big to scan whole is walked in place; when its own directory is
    damaged that is damage, not "inflates to N bytes, over the limit"."""
    checkpoint = tmp_path / "best.ckpt"
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("archive/data.pkl", b"x" * 4000)
    broken = bytearray(checkpoint.read_bytes())
    broken[broken.rfind(b"PK\x05\x06"):] = b"\0" * (len(broken) - broken.rfind(b"PK\x05\x06"))
    outer = tmp_path / "submission.zip"
    with zipfile.ZipFile(outer, "w") as archive:
        archive.writestr(CHECKPOINT, bytes(broken))
    monkeypatch.setattr(leaks, "MAX_SMALL_MEMBER_BYTES", 1000)  # the checkpoint counts as too big to read whole
    with pytest.raises(ArchiveError, match=f"damaged archive: member {CHECKPOINT}: it starts as a zip archive") as info:
        leaks.scan_file(outer)
    assert "over the limit" not in str(info.value)
