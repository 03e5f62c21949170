"""Bounded reading of zip archives that may be hostile (a submission.zip to grade, files to export).

Every read is limited before anything is inflated: the archive's central directory gives each member's
inflated size and compression ratio, and both are checked against the caller's limit first. The member
is then read in chunks and reading stops at the limit, in case the directory understates it. Duplicate
member names are refused (readers would silently take the last copy). PNG members are checked for their
pixel count from the header, before the image is decoded. Every refusal names the archive, the member and
the limit.

A damaged archive (a truncated file, a flipped byte, an encrypted member, a zip version or compression
method Python cannot read) is one error, :class:`ArchiveError`, whatever the zlib or zipfile exception
under it: the message says "damaged archive", names the member and says what is wrong in words.
"""

from __future__ import annotations

import io
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import IO, Callable, Iterator, Union

from PIL import Image

MiB = 1 << 20
# Read buffer: large enough to be fast, small enough that memory never depends on a member's size.
CHUNK_BYTES = 1 * MiB
# A prediction PNG is an 8-bit image of at most a few Mpx (MiniScapes and the synthetic set are far
# smaller); even stored uncompressed that is a few MiB. 32 MiB is generous headroom and still small.
MAX_PNG_BYTES = 32 * MiB
# Pixels a prediction PNG may declare before it is decoded. The datasets' test images are at most
# 2048x1024 (full Cityscapes resolution; MiniScapes and the synthetic set are smaller): 16 Mpx is 8x that,
# and decodes to at most 16 MiB at one byte a pixel.
MAX_PNG_PIXELS = 4096 * 4096
# source.zip holds the mtl/ sources (a few hundred KiB) and cmd.txt.
MAX_SOURCE_ZIP_BYTES = 64 * MiB
# Text and small files read whole (cmd.txt, metrics.csv, report files, a checkpoint's pickled graph).
MAX_SMALL_MEMBER_BYTES = 64 * MiB
# Deflate reaches ~1000:1 on runs of zeros; real content (sources, CSV, pickles, PNGs) stays well under
# 20:1. Small members are exempt: a short run of zeros legitimately compresses far.
MAX_COMPRESSION_RATIO = 100
RATIO_EXEMPT_BYTES = 1 * MiB

ZipSource = Union[str, Path, IO[bytes]]


class ArchiveError(ValueError):
    """An archive is unreadable, or breaks a size, ratio, pixel, depth or duplicate-name limit."""


# What zipfile and zlib raise for a damaged or unreadable archive: a bad CRC or header (BadZipFile), corrupt
# deflate data (zlib.error), a cut-off member (EOFError), an encrypted member (RuntimeError), a zip version or
# compression method Python cannot read (NotImplementedError), an impossible header field (ValueError,
# struct.error is one), a read error of the file itself (OSError).
DAMAGE_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError,
                                                  NotImplementedError, ValueError, OSError)


def damage_cause(exc: BaseException) -> str:
    """What is wrong with a damaged archive, in words, from the exception zipfile or zlib raised."""
    text = str(exc)
    if isinstance(exc, zlib.error):
        return f"its compressed data is corrupt ({text})"
    if isinstance(exc, zipfile.BadZipFile) and "CRC" in text:
        return "its data does not match its CRC-32 checksum (changed or cut short since it was written)"
    if isinstance(exc, RuntimeError) and "encrypted" in text:
        return "it is encrypted, which no archive written here ever is"
    if isinstance(exc, NotImplementedError):
        return f"it needs a zip feature Python cannot read ({text})"
    if isinstance(exc, EOFError):
        return "it ends before its data does (cut short)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def damaged(label: str, exc: BaseException, member: str | None = None) -> ArchiveError:
    """The one error of a damaged archive: ``<label>: damaged archive: member <name>: <cause>``."""
    where = f"member {member}: " if member else ""
    return ArchiveError(f"{label}: damaged archive: {where}{damage_cause(exc)}")


def archive_label(archive: zipfile.ZipFile, fallback: str = "archive") -> str:
    return str(archive.filename) if archive.filename else fallback


def open_zip(source: ZipSource, label: str) -> zipfile.ZipFile:
    """A ZipFile over ``source`` (a path or a seekable binary file); duplicate member names refused."""
    try:
        archive = zipfile.ZipFile(source)
    except FileNotFoundError as exc:
        raise ArchiveError(f"{label}: does not exist") from exc
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"{label}: damaged archive: not a readable zip archive ({exc})") from exc
    except DAMAGE_ERRORS as exc:
        raise damaged(label, exc) from exc
    refuse_duplicates(archive, label)
    return archive


def refuse_duplicates(archive: zipfile.ZipFile, label: str) -> None:
    """Close ``archive`` and refuse it if a member name appears twice (readers would take the last copy)."""
    duplicates = sorted(name for name, count in Counter(i.filename for i in archive.infolist()).items() if count > 1)
    if duplicates:
        archive.close()
        raise ArchiveError(f"{label}: member {duplicates[0]} appears more than once"
                           + (f" (and {len(duplicates) - 1} other duplicate names)" if len(duplicates) > 1 else "")
                           + "; an archive must name each member once")


def check_member(info: zipfile.ZipInfo, limit: int, label: str) -> None:
    """Refuse a member whose directory entry says it inflates past ``limit`` or compresses suspiciously far."""
    if info.file_size > limit:
        raise ArchiveError(f"{label}: member {info.filename} inflates to {info.file_size} bytes, over the "
                           f"limit of {limit} bytes for it")
    if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise ArchiveError(f"{label}: member {info.filename} inflates {info.file_size / max(info.compress_size, 1):.0f}"
                           f"-fold ({info.compress_size} -> {info.file_size} bytes), over the compression ratio "
                           f"limit of {MAX_COMPRESSION_RATIO}")


def member_info(archive: zipfile.ZipFile, name: str, label: str) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(name)
    except KeyError:
        raise ArchiveError(f"{label}: no member {name}") from None


def read_member(archive: zipfile.ZipFile, name: str | zipfile.ZipInfo, limit: int, label: str | None = None) -> bytes:
    """The bytes of one member, at most ``limit`` of them: checked from the directory first, then counted
    while inflating in chunks (reading stops one chunk past the limit whatever the directory claimed)."""
    label = label or archive_label(archive)
    info = name if isinstance(name, zipfile.ZipInfo) else member_info(archive, name, label)
    check_member(info, limit, label)
    buffer = io.BytesIO()
    for chunk in _inflated(archive, info, limit, label):
        buffer.write(chunk)
    return buffer.getvalue()


def _inflated(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, label: str) -> Iterator[bytes]:
    """The member's bytes in chunks as zipfile inflates them (checking its CRC-32 at the end), stopping one
    chunk past ``limit`` whatever the directory claimed; ArchiveError for too many bytes or damage."""
    seen = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(min(CHUNK_BYTES, limit + 1 - seen)):
                seen += len(chunk)
                if seen > limit:
                    raise ArchiveError(f"{label}: member {info.filename} inflates past the limit of {limit} bytes "
                                       f"(its directory entry claimed {info.file_size})")
                yield chunk
    except ArchiveError:
        raise
    except DAMAGE_ERRORS as exc:
        raise damaged(label, exc, info.filename) from exc


def check_crcs(archive: zipfile.ZipFile, limit_of: Callable[[str], int], label: str | None = None) -> None:
    """Inflate every member (discarding the bytes, never more than ``limit_of(name)`` of each) so that
    zipfile checks its CRC-32; ArchiveError naming the first damaged member."""
    label = label or archive_label(archive)
    for info in archive.infolist():
        limit = limit_of(info.filename)
        check_member(info, limit, label)
        for _ in _inflated(archive, info, limit, label):
            pass


def read_png(archive: zipfile.ZipFile, name: str, label: str | None = None,
             max_pixels: int = MAX_PNG_PIXELS) -> Image.Image:
    """A decoded PNG member; its size is bounded before inflating and its pixel count before decoding."""
    label = label or archive_label(archive)
    data = read_member(archive, name, MAX_PNG_BYTES, label)
    try:
        with warnings.catch_warnings():  # PIL's bomb warning (over 89 Mpx): the stricter check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["PNG"])  # lazy: reads the header only
    except Image.DecompressionBombError as exc:  # PIL's own refusal (over 179 Mpx), also before decoding
        raise ArchiveError(f"{label}: member {name} is over the limit of {max_pixels} pixels for a prediction; "
                           f"refused before decoding ({exc})") from exc
    except Exception as exc:  # PIL raises many types for a damaged or truncated PNG
        raise ArchiveError(f"{label}: member {name} is not a readable PNG ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ArchiveError(f"{label}: member {name} is {width}x{height} = {width * height} pixels, over the limit "
                           f"of {max_pixels} pixels for a prediction; refused before decoding")
    try:
        image.load()
    except Exception as exc:  # PIL raises many types for a damaged or truncated PNG
        raise ArchiveError(f"{label}: member {name} does not decode ({exc})") from exc
    return image
