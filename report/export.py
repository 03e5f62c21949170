"""``dlad_ex2_report.<team>.zip``: the write-up, its tables and figures, and the submission.zip of every
run the report cites, ready to hand in.

Archive layout::

    report/report.md  report/report.tex  report/tables/...  report/figures/...
    submissions/<entry>/<run>/submission.zip     stored byte for byte (never recompressed)
    submissions/<entry>/<run>/environment.json   what the run trained with (git state, packages, torch, device)
    MANIFEST.json                                every member with its sha256; runs not exported and why

Before anything is written, every file going in is scanned for secrets and personal paths
(:mod:`report.leaks`, nested zips included); any finding refuses the export and names the file, the
member and the line. The archive is written to a temporary file beside the target, read back and
checked member by member against the sha256 of its source, and only then renamed into place. Every
submission.zip is streamed from disk in chunks (hashed, scanned, copied, read back), never loaded whole,
so memory stays flat in the number of runs.

An export with something missing (a run not finished, an entry without runs, a figure not drawn) is
written with MANIFEST.json listing what is missing, unless ``strict``, which refuses and writes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from mtl.run.errors import RecordError
from mtl.run.layout import RunDirectory
from mtl.run.model import STATE_COLUMN, RunState
from mtl.run.records import read_status
from mtl.safezip import CHUNK_BYTES
from mtl.train.submission import file_digest, packed_problems
from report.leaks import Finding, LeakError, scan_bytes, scan_file
from report.store import LocalStore
from report.writeup import FORMATS, write_report

TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # member timestamps: the same inputs give the same archive
_STORED_SUFFIXES = (".zip", ".png", ".pdf", ".jpg")


class ExportError(RuntimeError):
    """The archive cannot be built; the message says which run or file and why."""


@dataclass
class Member:
    """One file of the archive: small ones held as bytes, submission.zips left on disk and streamed."""
    name: str  # path inside the archive
    stored: bool  # ZIP_STORED (copied as is) rather than deflated
    sha256: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def from_bytes(cls, name: str, data: bytes, stored: bool) -> Member:
        return cls(name, stored, hashlib.sha256(data).hexdigest(), len(data), data=data)

    @classmethod
    def from_file(cls, name: str, path: Path, stored: bool) -> Member:
        size, digest = file_digest(path)
        return cls(name, stored, digest, size, path=path)

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        if self.path is None:  # from_bytes and from_file each set one of the two
            raise ValueError(f"archive member {self.name} holds neither bytes nor a file")
        return open(self.path, "rb")


@dataclass
class ExportResult:
    path: Path | None  # None: not written (a strict export with something missing)
    members: list[Member]
    exported_runs: list[str]
    skipped_runs: dict[str, str] = field(default_factory=dict)  # run -> why it has no submission in the archive
    problems: list[str] = field(default_factory=list)  # report problems (figures not drawn, entries without runs)
    # Runs whose result has no weights to grade (diverged, skipped here): cited by the tables, nothing missing.
    without_submission: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """What a complete archive would hold and this one does not, one line each."""
        return [f"run {run} not exported: {why}" for run, why in self.skipped_runs.items()] + list(self.problems)


class IncompleteExportError(ExportError):
    """``strict`` export with something missing: nothing was written; ``missing`` says what."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__("not writing an incomplete archive (strict): " + "; ".join(missing))


def archive_name(team: str) -> str:
    if not TEAM_NAME.match(team):
        raise ExportError(f"team name {team!r}: expected letters, digits, '_' or '-' (at most 64, starting "
                          "with a letter or digit), as it becomes part of the file name")
    return f"dlad_ex2_report.{team}.zip"


# States that are a run's result without a submission.zip: not missing from a complete archive.
RESULTS_WITHOUT_WEIGHTS = {
    RunState.DIVERGED: "diverged: its result is the divergence the tables show, no weights to grade",
    RunState.SKIPPED: "skipped: it cannot run on this machine (the tables give the reason)"}


def submission_members(sections: Iterable[Any]) -> tuple[list[Member], list[str], dict[str, str], dict[str, str]]:
    """The submission.zip of every finished run the report's tables cite (run dirs from the store); the runs
    not finished yet (missing), and the runs whose result has no weights (diverged, skipped)."""
    members, exported, skipped, without = [], [], {}, {}
    shipped: dict[Path, str] = {}  # a run reused by several entries is shipped once
    for section in sections:
        if section.tables is None:
            continue
        for _, run in section.tables.runs.iterrows():
            run_dir = Path(run["source"])
            key = f"{section.entry.id}/{run['run']}"
            state = run[STATE_COLUMN]
            if state in RESULTS_WITHOUT_WEIGHTS:
                without[key] = RESULTS_WITHOUT_WEIGHTS[state]
                continue
            if state != RunState.FINISHED:
                skipped[key] = f"state {state}: no submission.zip until it finishes"
                continue
            submission = RunDirectory(run_dir).submission
            if not submission.is_file():
                raise ExportError(f"run {run_dir} is finished but has no submission.zip (deleted or lost), so it "
                                  "cannot be exported")
            if run_dir.resolve() in shipped:
                continue  # the same run (reused by this entry) is in the archive under its first key
            check_submission(run_dir, section.entry.id)
            shipped[run_dir.resolve()] = key
            # Left on disk: memory stays flat in the number of runs, the bytes are copied as they are.
            members.append(Member.from_file(f"submissions/{key}/submission.zip", submission, stored=True))
            environment = RunDirectory(run_dir).environment  # what it trained with (redacted when recorded)
            if environment.is_file():
                members.append(Member.from_file(f"submissions/{key}/environment.json", environment, stored=False))
            exported.append(key)
    return members, exported, skipped, without


def check_submission(run_dir: Path, entry_id: str) -> None:
    """Ship a run's submission.zip only when it is the archive its trainer packed (or, for a run whose status
    records no digest, when it opens, every member's CRC-32 holds and its structure validates)."""
    run = RunDirectory(run_dir)
    try:
        status = read_status(run_dir)
    except RecordError as exc:
        raise ExportError(str(exc)) from None
    problems = packed_problems(run.submission, status.submission if status else None, run.status_path)
    if problems:
        raise ExportError(f"run {run_dir}: {problems[0]}; `mtl-ablate repair {entry_id}` rebuilds it from "
                          f"{run.best.relative_to(run.path)} (nothing was written)")


def report_members(report_dir: Path) -> list[Member]:
    members = []
    for path in sorted(p for p in report_dir.rglob("*") if p.is_file()):
        name = "report/" + path.relative_to(report_dir).as_posix()
        members.append(Member.from_bytes(name, path.read_bytes(), stored=path.suffix in _STORED_SUFFIXES))
    return members


def manifest(members: list[Member], exported: list[str], skipped: dict[str, str], team: str,
             problems: Iterable[str] = (), without: dict[str, str] | None = None) -> Member:
    problems = list(problems)
    data = {
        "team": team,
        "complete": not (skipped or problems),  # False: what is missing is listed below
        "members": {m.name: {"sha256": m.sha256, "bytes": m.size} for m in members},
        "exported_runs": exported,
        "runs_not_exported": skipped,
        "runs_without_submission": without or {},
        "report_problems": problems,
    }
    return Member.from_bytes("MANIFEST.json", (json.dumps(data, indent=2) + "\n").encode(), stored=False)


def scan(members: list[Member]) -> list[Finding]:
    findings: list[Finding] = []
    for member in members:
        if member.data is not None:
            findings += scan_bytes(member.data, member.name)
        else:
            findings += scan_file(member.path, member.name)  # type: ignore[arg-type]
    return findings


def write_archive(path: Path, members: list[Member]) -> None:
    """Write ``members`` to ``path`` via a temporary file, verify every member's sha256 by reading the
    archive back, then rename it into place; a failure leaves no file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
                for member in members:
                    info = zipfile.ZipInfo(member.name, date_time=_FIXED_TIME)
                    info.compress_type = zipfile.ZIP_STORED if member.stored else zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    info.file_size = member.size  # lets zipfile choose zip64 up front for big members
                    digest = hashlib.sha256()
                    with member.open() as source, archive.open(info, "w") as target:
                        while chunk := source.read(CHUNK_BYTES):
                            digest.update(chunk)
                            target.write(chunk)
                    if digest.hexdigest() != member.sha256:
                        raise ExportError(f"{member.path or member.name} changed while it was being exported; "
                                          "export again once nothing writes to it")
            handle.flush()
            os.fsync(handle.fileno())
        verify_archive(tmp, members)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write(2) names no file: a full disk
            exc.filename = str(path)
        raise


def verify_archive(path: Path, members: list[Member]) -> None:
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        if sorted(infos) != sorted(m.name for m in members):
            raise ExportError(f"{path}: the archive's members differ from what was written")
        for member in members:
            info = infos[member.name]
            if member.stored and info.compress_type != zipfile.ZIP_STORED:
                raise ExportError(f"{path}: {member.name} was recompressed")
            digest = hashlib.sha256()
            with archive.open(info) as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    digest.update(chunk)
            if digest.hexdigest() != member.sha256:
                raise ExportError(f"{path}: {member.name} does not read back byte for byte (sha256 differs)")


def export(team: str, runs_dir: str | Path, entries: Iterable[Any], out_dir: str | Path = "reports",
           dataset_root: Path | None = None, draw_figures: bool = True,
           cache_dir: Path | None = None, strict: bool = False,
           selections: dict[str, Any] | None = None) -> ExportResult:
    """Build ``<out_dir>/dlad_ex2_report.<team>.zip`` from the run records of ``entries``. What is missing
    (runs not finished, entries without runs, figures not drawn) is listed in MANIFEST.json and in the
    result; with ``strict`` it refuses instead (:class:`IncompleteExportError`) and writes nothing."""
    name = archive_name(team)
    runs_dir = Path(runs_dir)
    # With ``selections`` (entry id -> mtl.ablate.selection.Selection) only the runs of each entry's plan.
    results = LocalStore(runs_dir, cache_dir=cache_dir).load(selections=selections)
    with tempfile.TemporaryDirectory(prefix="mtl-export-") as tmp:
        report_dir = Path(tmp) / "report"
        # The runs folder is named by its last part only: an absolute path would name the user's home.
        report = write_report(entries, results, report_dir, FORMATS, draw_figures=draw_figures,
                              dataset_root=dataset_root, runs_label=runs_dir.name or "runs", selections=selections)
        members = report_members(report_dir)
    submissions, exported, skipped, without = submission_members(report.sections)
    members += submissions
    incomplete = ExportResult(None, members, exported, skipped, report.problems)
    if strict and incomplete.missing:
        raise IncompleteExportError(incomplete.missing)
    members.append(manifest(members, exported, skipped, team, report.problems, without))
    findings = scan(members)
    if findings:
        raise LeakError(findings)
    path = Path(out_dir) / name
    write_archive(path, members)
    return ExportResult(path=path, members=members, exported_runs=exported, skipped_runs=skipped,
                        problems=report.problems, without_submission=without)
