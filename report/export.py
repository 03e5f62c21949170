"""``dlad_ex2_report.<team>.zip``: the write-up, its tables and figures, and the submission.zip of every
run the report cites, ready to hand in.

Archive layout::

    report/report.md  report/report.tex  report/tables/...  report/figures/...
    submissions/<entry>/<run>/submission.zip     stored byte for byte (never recompressed)
    MANIFEST.json                                every member with its sha256; runs not exported and why

Before anything is written, every file going in is scanned for secrets and personal paths
(:mod:`report.leaks`, nested zips included); any finding refuses the export and names the file, the
member and the line. The archive is written to a temporary file beside the target, read back and
checked member by member against the sha256 of its source, and only then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from report.leaks import Finding, LeakError, scan_bytes
from report.store import LocalStore
from report.writeup import FORMATS, write_report

TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # member timestamps: the same inputs give the same archive
_STORED_SUFFIXES = (".zip", ".png", ".pdf", ".jpg")


class ExportError(RuntimeError):
    """The archive cannot be built; the message says which run or file and why."""


@dataclass
class Member:
    name: str  # path inside the archive
    data: bytes
    stored: bool  # ZIP_STORED (copied as is) rather than deflated

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class ExportResult:
    path: Path
    members: list[Member]
    exported_runs: list[str]
    skipped_runs: dict[str, str] = field(default_factory=dict)  # run -> why it has no submission in the archive
    problems: list[str] = field(default_factory=list)  # report problems (figures not drawn, entries without runs)


def archive_name(team: str) -> str:
    if not TEAM_NAME.match(team):
        raise ExportError(f"team name {team!r}: expected letters, digits, '_' or '-' (at most 64, starting "
                          "with a letter or digit), as it becomes part of the file name")
    return f"dlad_ex2_report.{team}.zip"


def submission_members(sections: Iterable[Any]) -> tuple[list[Member], list[str], dict[str, str]]:
    """The submission.zip of every finished run the report's tables cite (run dirs from the store)."""
    members, exported, skipped = [], [], {}
    for section in sections:
        if section.tables is None:
            continue
        for _, run in section.tables.runs.iterrows():
            run_dir = Path(run["source"])
            key = f"{section.entry.id}/{run['run']}"
            state = run["state"]
            if state != "finished":
                skipped[key] = f"state {state}: no submission.zip until it finishes"
                continue
            submission = run_dir / "submission.zip"
            if not submission.is_file():
                raise ExportError(f"run {run_dir} is finished but has no submission.zip; rerun it with "
                                  f"`mtl-ablate run {section.entry.id}` (it rebuilds the archive)")
            members.append(Member(f"submissions/{key}/submission.zip", submission.read_bytes(), stored=True))
            exported.append(key)
    return members, exported, skipped


def report_members(report_dir: Path) -> list[Member]:
    members = []
    for path in sorted(p for p in report_dir.rglob("*") if p.is_file()):
        name = "report/" + path.relative_to(report_dir).as_posix()
        members.append(Member(name, path.read_bytes(), stored=path.suffix in _STORED_SUFFIXES))
    return members


def manifest(members: list[Member], exported: list[str], skipped: dict[str, str], team: str) -> Member:
    data = {
        "team": team,
        "members": {m.name: {"sha256": m.sha256, "bytes": len(m.data)} for m in members},
        "exported_runs": exported,
        "runs_not_exported": skipped,
    }
    return Member("MANIFEST.json", (json.dumps(data, indent=2) + "\n").encode(), stored=False)


def scan(members: list[Member]) -> list[Finding]:
    findings: list[Finding] = []
    for member in members:
        findings += scan_bytes(member.data, member.name)
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
                    archive.writestr(info, member.data)
            handle.flush()
            os.fsync(handle.fileno())
        verify_archive(tmp, members)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
            if hashlib.sha256(archive.read(member.name)).hexdigest() != member.sha256:
                raise ExportError(f"{path}: {member.name} does not read back byte for byte (sha256 differs)")


def export(team: str, runs_dir: str | Path, entries: Iterable[Any], out_dir: str | Path = "reports",
           dataset_root: Path | None = None, draw_figures: bool = True,
           cache_dir: Path | None = None) -> ExportResult:
    """Build ``<out_dir>/dlad_ex2_report.<team>.zip`` from the run records of ``entries``."""
    name = archive_name(team)
    runs_dir = Path(runs_dir)
    results = LocalStore(runs_dir, cache_dir=cache_dir).load()
    with tempfile.TemporaryDirectory(prefix="mtl-export-") as tmp:
        report_dir = Path(tmp) / "report"
        # The runs folder is named by its last part only: an absolute path would name the user's home.
        report = write_report(entries, results, report_dir, FORMATS, draw_figures=draw_figures,
                              dataset_root=dataset_root, runs_label=runs_dir.name or "runs")
        members = report_members(report_dir)
    submissions, exported, skipped = submission_members(report.sections)
    members += submissions
    members.append(manifest(members, exported, skipped, team))
    findings = scan(members)
    if findings:
        raise LeakError(findings)
    path = Path(out_dir) / name
    write_archive(path, members)
    return ExportResult(path=path, members=members, exported_runs=exported, skipped_runs=skipped,
                        problems=report.problems)
