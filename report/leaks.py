"""Secrets and personal paths in files about to leave the machine, found before they are archived.

What counts (docs/DESIGN.md §8: no secret is ever logged or archived): the patterns of :mod:`mtl.secrets`
(API keys and tokens, private keys, absolute home paths), which also redact what a run records of its
environment, and ``.netrc`` files themselves.

Zip archives are scanned member by member from disk, recursively, within the size, ratio, depth and
total limits below (an archive to export may be hostile too) (submission.zip holds source.zip, and a torch
checkpoint is itself a zip). In a torch checkpoint only the pickled object graph (``data.pkl``, where
every string lives) is scanned, not the raw tensor storages (``<name>/data/<n>``): those are numbers.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mtl.safezip import (
    DAMAGE_ERRORS,
    MAX_SMALL_MEMBER_BYTES,
    ArchiveError,
    check_member,
    damaged,
    read_member,
    refuse_duplicates,
)
from mtl.secrets import ANCHORS as _ANCHORS
from mtl.secrets import PATTERNS

NETRC_NAMES = (".netrc", "_netrc")
# submission.zip > checkpoint (a torch zip) is 2 deep, submission.zip > source.zip 2 as well; an export
# scans report files and submission.zips at depth 0. Deeper nesting has no legitimate use here.
MAX_NESTING_DEPTH = 4
# Inflated bytes actually scanned in one file: sources, CSVs, a checkpoint's pickled graph come to a few
# MiB a run (tensor storages are skipped, not read); 1 GiB is far beyond that and bounds a zip bomb's time.
MAX_SCAN_BYTES = 1 << 30
# A nested archive too big to read whole (a checkpoint: ~100-300 MiB for the models here) is walked in
# place, never loaded; its size is still bounded, as walking a deflated member costs time in its size.
MAX_NESTED_ZIP_BYTES = 8 << 30


@dataclass(frozen=True)
class Finding:
    file: str  # the file as the caller named it (e.g. its place in the archive)
    member: str  # path inside (nested) zips, "!"-separated; "" for the file itself
    line: int  # 1-based line of the match (0: the file's name is the finding)
    kind: str
    excerpt: str  # the match with most of any secret masked

    def where(self) -> str:
        member = f" member {self.member}" if self.member else ""
        line = f" line {self.line}" if self.line else ""
        return f"{self.file}{member}{line}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.kind} ({self.excerpt})"


def _mask(text: str) -> str:
    # Enough to recognise the spot, not enough to reuse the secret.
    if len(text) <= 12:
        return text[:4] + "…"
    return text[:12] + "…" + f"[{len(text)} chars]"


def scan_bytes(data: bytes, file: str, member: str = "") -> list[Finding]:
    """Findings in ``data`` (any content); zip archives are opened and scanned member by member."""
    return _Scan().content(data, file, member, depth=0)


def scan_file(path: Path, name: str | None = None) -> list[Finding]:
    """Findings in the file at ``path``; a zip is read from disk member by member (never loaded whole),
    each member bounded as :class:`_Scan` says."""
    name = name or str(path)
    scan = _Scan()
    with open(path, "rb") as handle:
        if handle.read(4) == b"PK\x03\x04" or path.name.endswith(".zip"):
            handle.seek(0)
            nested = scan.zip(handle, name, "", depth=0)
            if nested is not None:
                return scan.netrc(name, "") + nested
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_SMALL_MEMBER_BYTES:
            raise ArchiveError(f"{name}: {size} bytes, over the limit of {MAX_SMALL_MEMBER_BYTES} bytes for a file "
                               "scanned for secrets")
        handle.seek(0)
        return scan.content(handle.read(), name, "", depth=0)


class _Scan:
    """One scan of one file. Limits (each refusal names the file, the member and the limit): nested zips
    at most MAX_NESTING_DEPTH deep, each scanned member at most MAX_SMALL_MEMBER_BYTES inflated, at most
    MAX_SCAN_BYTES inflated in all, and every member checked against its directory entry first."""

    def __init__(self) -> None:
        self.scanned = 0

    def netrc(self, file: str, member: str) -> list[Finding]:
        name = member.rsplit("!", 1)[-1] if member else file
        if Path(name).name in NETRC_NAMES:
            return [Finding(file, member, 0, ".netrc file (holds login credentials)", Path(name).name)]
        return []

    def content(self, data: bytes, file: str, member: str, depth: int) -> list[Finding]:
        findings = self.netrc(file, member)
        name = member.rsplit("!", 1)[-1] if member else file
        if data[:4] == b"PK\x03\x04" or name.endswith(".zip"):
            nested = self.zip(io.BytesIO(data), file, member, depth)
            if nested is not None:
                return findings + nested
        if not _ANCHORS.search(data):
            return findings
        for kind, pattern in PATTERNS:
            for match in pattern.finditer(data):
                line = data.count(b"\n", 0, match.start()) + 1
                excerpt = _mask(match.group(0).decode("latin-1"))
                findings.append(Finding(file, member, line, kind, excerpt))
        return sorted(findings, key=lambda f: (f.line, f.kind))

    def zip(self, source: IO[bytes], file: str, member: str, depth: int) -> list[Finding] | None:
        """Findings of every member of the zip in ``source``; None if it is not a zip after all."""
        label = f"{file} member {member}" if member else file
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, EOFError):
            return None  # a file that merely starts like a zip: the caller scans it as bytes
        except DAMAGE_ERRORS as exc:  # a zip, but one zipfile cannot read (version, encryption, bad header)
            raise damaged(label, exc) from exc
        if depth >= MAX_NESTING_DEPTH:
            archive.close()
            raise ArchiveError(f"{label}: a zip nested {depth + 1} deep, over the limit of {MAX_NESTING_DEPTH} "
                               "nested archives scanned for secrets")
        refuse_duplicates(archive, label)
        findings: list[Finding] = []
        with archive:
            infos = archive.infolist()
            torch_storages = _torch_storage_members([i.filename for i in infos])
            for info in infos:
                if info.is_dir() or info.filename in torch_storages:
                    continue
                path = f"{member}!{info.filename}" if member else info.filename
                findings += self.member(archive, info, file, path, label, depth)
        return findings

    def member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, file: str, path: str, label: str,
               depth: int) -> list[Finding]:
        if info.file_size > MAX_SMALL_MEMBER_BYTES:
            # Too big to read whole: only a nested archive (a checkpoint) may be, and it is walked in place.
            check_member(info, MAX_NESTED_ZIP_BYTES, label)
            try:
                with archive.open(info) as stream:
                    looks_like_zip = stream.read(4) == b"PK\x03\x04"
                    nested = self.zip(stream, file, path, depth + 1) if looks_like_zip else None
            except ArchiveError:
                raise
            except DAMAGE_ERRORS as exc:
                raise damaged(label, exc, info.filename) from exc
            if nested is None and looks_like_zip:  # a checkpoint whose own directory is damaged
                raise ArchiveError(f"{label}: damaged archive: member {info.filename}: it starts as a zip archive "
                                   "(a checkpoint) but its directory cannot be read")
            if nested is None:
                raise ArchiveError(f"{label}: member {info.filename} inflates to {info.file_size} bytes, over the "
                                   f"limit of {MAX_SMALL_MEMBER_BYTES} bytes for a member scanned for secrets")
            return self.netrc(file, path) + nested
        data = read_member(archive, info, MAX_SMALL_MEMBER_BYTES, label)
        self.scanned += len(data)
        if self.scanned > MAX_SCAN_BYTES:
            raise ArchiveError(f"{file}: more than {MAX_SCAN_BYTES} bytes inflated while scanning it for secrets "
                               f"(reached at member {path}); refused as a likely zip bomb")
        return self.content(data, file, path, depth + 1)


def _torch_storage_members(names: list[str]) -> set[str]:
    """Raw tensor storages of a torch.save archive (``<root>/data/<n>`` beside ``<root>/data.pkl``)."""
    roots = {n[: -len("data.pkl")] for n in names if n.endswith("data.pkl")}
    return {n for n in names for root in roots if n.startswith(root + "data/") and n[len(root) + 5:].isdigit()}


class LeakError(RuntimeError):
    """Files about to be archived hold secrets or personal paths; the message lists every finding."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        lines = "\n".join(f"  {f}" for f in findings)
        super().__init__(f"refusing to write the archive: {len(findings)} possible secret(s) or personal "
                         f"path(s) found; remove them and export again:\n{lines}")
