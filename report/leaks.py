"""Secrets and personal paths in files about to leave the machine, found before they are archived.

What counts (DESIGN.md: no secret is ever logged or archived): W&B API keys (40 hex characters after
``WANDB_API_KEY`` or as a ``.netrc`` password), ngrok auth tokens, other API keys and tokens assigned to
a key/secret/token name or in a well-known vendor format, private keys (``-----BEGIN ... PRIVATE
KEY-----``), ``.netrc`` files themselves, and absolute home paths (``/home/<user>/``, ``/Users/<user>/``,
``/root/``, ``C:\\Users\\<user>\\``) that name the person and their machine.

Zip archives are scanned member by member, recursively (submission.zip holds source.zip, and a torch
checkpoint is itself a zip). In a torch checkpoint only the pickled object graph (``data.pkl``, where
every string lives) is scanned, not the raw tensor storages (``<name>/data/<n>``): those are numbers.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

NETRC_NAMES = (".netrc", "_netrc")
_TOKEN = rb"[A-Za-z0-9_\\\-]"
_U = rb"\\?_"  # an underscore, also as LaTeX writes it (\_), so the .tex write-up is covered too
PATTERNS: list[tuple[str, re.Pattern[bytes]]] = [
    ("private key", re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    ("W&B API key", re.compile(rb"WANDB" + _U + rb"API" + _U + rb"KEY['\"]?\s*[:=]\s*['\"]?(?:local-)?[0-9a-f]{40}(?![0-9a-f])")),
    ("W&B API key (.netrc password)", re.compile(rb"\bpassword\s+['\"]?(?:local-)?[0-9a-f]{40}(?![0-9a-f])")),
    ("ngrok auth token", re.compile(rb"(?i)(?:ngrok|auth(?:" + _U + rb")?token)[^\n]{0,40}?['\"\s=:(]\s*[0-9A-Za-z]{20,}"
                                    + _U + rb"[0-9A-Za-z]{15,}")),
    ("API key or token", re.compile(
        rb"(?i)\b[A-Z0-9_\\]*(?:API(?:" + _U + rb")?KEY|SECRET(?:" + _U + rb"KEY)?|(?:ACCESS|AUTH)(?:" + _U + rb")?TOKEN)"
        rb"['\"]?\s*[:=]\s*['\"]?" + _TOKEN + rb"{20,}")),
    ("GitHub token", re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36}\b")),
    ("AWS access key id", re.compile(rb"\bAKIA[0-9A-Z]{16}\b")),
    ("OpenAI-style secret key", re.compile(rb"\bsk-[A-Za-z0-9_\-]{32,}")),
    ("Hugging Face token", re.compile(rb"\bhf_[A-Za-z0-9]{34}\b")),
    ("absolute home path", re.compile(rb"(?:/home/[A-Za-z0-9._-]+/|/Users/[A-Za-z0-9._-]+/|(?<![A-Za-z0-9_.-])/root/"
                                      rb"|[A-Za-z]:\\\\?Users\\\\?[A-Za-z0-9._ -]+\\)")),
]
# One pass over the bytes: a cheap literal pre-filter before the detailed patterns.
_ANCHORS = re.compile(rb"(?i)BEGIN|WANDB|password|ngrok|auth|key|secret|token|gh[pousr]_|AKIA|sk-|hf_|/home/|/Users/|/root/|Users\\")


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
    findings: list[Finding] = []
    name = member.rsplit("!", 1)[-1] if member else file
    if Path(name).name in NETRC_NAMES:
        findings.append(Finding(file, member, 0, ".netrc file (holds login credentials)", Path(name).name))
    if data[:4] == b"PK\x03\x04" or name.endswith(".zip"):
        nested = _scan_zip(data, file, member)
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


def _scan_zip(data: bytes, file: str, member: str) -> list[Finding] | None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return None  # not a zip after all (a file that merely starts like one): scan it as bytes
    findings: list[Finding] = []
    with archive:
        names = archive.namelist()
        torch_storages = _torch_storage_members(names)
        for inner in names:
            if inner.endswith("/") or inner in torch_storages:
                continue
            path = f"{member}!{inner}" if member else inner
            findings += scan_bytes(archive.read(inner), file, path)
    return findings


def _torch_storage_members(names: list[str]) -> set[str]:
    """Raw tensor storages of a torch.save archive (``<root>/data/<n>`` beside ``<root>/data.pkl``)."""
    roots = {n[: -len("data.pkl")] for n in names if n.endswith("data.pkl")}
    return {n for n in names for root in roots if n.startswith(root + "data/") and n[len(root) + 5:].isdigit()}


def scan_file(path: Path, name: str | None = None) -> list[Finding]:
    return scan_bytes(path.read_bytes(), name or str(path))


class LeakError(RuntimeError):
    """Files about to be archived hold secrets or personal paths; the message lists every finding."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        lines = "\n".join(f"  {f}" for f in findings)
        super().__init__(f"refusing to write the archive: {len(findings)} possible secret(s) or personal "
                         f"path(s) found; remove them and export again:\n{lines}")
