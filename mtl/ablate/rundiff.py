"""``mtl-ablate diff RUN_A RUN_B``: what differs between two runs, section by section.

- config: every key of config.yaml whose value differs (run-invariant keys marked: where and how a run
  executed, not what it computed);
- code: the code version of each status, and when they differ the files of source.zip that differ (by
  their CRC-32 in the archive's directory: nothing is inflated);
- environment: the latest attempt's environment.json field by field, packages by name;
- data: the dataset fingerprint each status recorded (the files and sizes under its splits).

Every file is read through the run package's one reader (a damaged record is named, not compared) and
source.zip through mtl.safezip (it may be hostile). Exit codes as diff(1): 0 the same, 1 different, 2 trouble.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mtl.config import RUN_INVARIANT_KEYS, quoted
from mtl.run.errors import RecordError
from mtl.run.layout import CONFIG_FILE, STATUS_FILE, RunDirectory
from mtl.run.model import Environment, Status
from mtl.run.records import read_config, read_environment, read_status
from mtl.safezip import ArchiveError, open_zip

from .arguments import UsageError

SECTIONS = ("config", "code", "environment", "data")
VALUE_LIMIT = 80  # characters of a value shown (a diff or a long list is summarised, not printed)


@dataclass
class Run:
    """What ``diff`` compares of one run."""

    path: Path
    config: dict[str, Any]
    status: Optional[Status]
    environment: Optional[Environment]
    sources: Optional[dict[str, int]]  # source.zip member -> CRC-32; None without a source.zip


@dataclass
class Report:
    """The differences by section (lines), and what could not be compared."""

    lines: dict[str, list[str]] = field(default_factory=lambda: {section: [] for section in SECTIONS})

    @property
    def same(self) -> bool:
        return not any(self.lines.values())


def find_run(text: str, runs_dir: Path) -> Path:
    """A run directory from ``text``: a path to one, or ENTRY/RUN below ``runs_dir``."""
    for candidate in (Path(text), Path(runs_dir) / text):
        if (candidate / CONFIG_FILE).is_file() or (candidate / STATUS_FILE).is_file():
            return candidate
    raise UsageError(f"{text!r} is not a run directory (no {CONFIG_FILE} or {STATUS_FILE} there, nor in "
                     f"{Path(runs_dir) / text}); give a run's folder or ENTRY/RUN below --runs-dir")


def load(path: Path) -> Run:
    """A run's records for comparing; UsageError naming the file for a damaged one."""
    try:
        status = read_status(path)
        config = read_config(path) or {}
        environments = read_environment(path)
    except RecordError as exc:
        raise UsageError(f"cannot compare {path}: {exc}") from None
    return Run(path, config, status, environments.attempts[-1] if environments else None, _sources(path))


def _sources(path: Path) -> Optional[dict[str, int]]:
    source_zip = RunDirectory(path).source_zip
    if not source_zip.is_file():
        return None
    try:
        with open_zip(source_zip, str(source_zip)) as archive:
            return {info.filename: info.CRC for info in archive.infolist()}
    except ArchiveError as exc:
        raise UsageError(f"cannot compare {path}: {exc}") from None


def _shown(value: Any) -> str:
    return quoted(value, VALUE_LIMIT)


def _pair(key: str, a: Any, b: Any, note: str = "") -> str:
    return f"{key}: {_shown(a)} | {_shown(b)}{note}"


def compare_config(a: Run, b: Run) -> list[str]:
    lines = []
    for key in sorted(set(a.config) | set(b.config)):
        if key == "log_dir" or a.config.get(key) == b.config.get(key):
            continue
        note = " (where or how it ran, not what it computed)" if key in RUN_INVARIANT_KEYS else ""
        lines.append(_pair(key, a.config.get(key, "(absent)"), b.config.get(key, "(absent)"), note))
    return lines


def compare_code(a: Run, b: Run) -> list[str]:
    version_a = a.status.code_version if a.status else None
    version_b = b.status.code_version if b.status else None
    lines = [_pair("code_version", version_a, version_b)] if version_a != version_b else []
    if a.sources is None or b.sources is None:
        if (a.sources is None) != (b.sources is None):
            lines.append(f"source.zip: {'absent' if a.sources is None else 'present'} | "
                         f"{'absent' if b.sources is None else 'present'}")
        return lines
    for name in sorted(set(a.sources) | set(b.sources)):
        if name == "cmd.txt" or a.sources.get(name) == b.sources.get(name):
            continue  # cmd.txt holds the hyperparameters: the config section shows them
        if name not in a.sources or name not in b.sources:
            lines.append(f"{name}: {'only in B' if name not in a.sources else 'only in A'}")
        else:
            lines.append(f"{name}: changed")
    return lines


def compare_environment(a: Run, b: Run) -> list[str]:
    if a.environment is None or b.environment is None:
        if a.environment is None and b.environment is None:
            return []
        return [f"environment.json: {'absent' if a.environment is None else 'recorded'} | "
                f"{'absent' if b.environment is None else 'recorded'}"]
    one, two = a.environment.model_dump(), b.environment.model_dump()
    summarised = ("packages", "git_diff", "git_diff_bytes", "git_diff_sha256")  # compared below, not printed whole
    lines = [_pair(key, one[key], two[key]) for key in one if key not in summarised and one[key] != two[key]]
    if one["git_diff_sha256"] != two["git_diff_sha256"]:
        lines.append(f"git_diff: {one['git_diff_bytes']} bytes | {two['git_diff_bytes']} bytes (their texts differ; "
                     "each is in its run's environment.json)")
    return lines + _packages(one["packages"], two["packages"])


def _packages(a: list[str], b: list[str]) -> list[str]:
    def versions(lines: list[str]) -> dict[str, str]:
        return dict(line.partition("==")[::2] for line in lines)

    one, two = versions(a), versions(b)
    lines = []
    for name in sorted(set(one) | set(two), key=str.lower):
        if one.get(name) != two.get(name):
            lines.append(f"package {name}: {one.get(name, '(absent)')} | {two.get(name, '(absent)')}")
    return lines


def compare_data(a: Run, b: Run) -> list[str]:
    one = a.status.dataset if a.status else None
    two = b.status.dataset if b.status else None
    return [_pair("dataset fingerprint", one, two)] if one != two else []


def diff(a: Run, b: Run) -> Report:
    report = Report()
    report.lines["config"] = compare_config(a, b)
    report.lines["code"] = compare_code(a, b)
    report.lines["environment"] = compare_environment(a, b)
    report.lines["data"] = compare_data(a, b)
    return report


def render(a: Run, b: Run, report: Report) -> list[str]:
    lines = [f"A: {a.path}", f"B: {b.path}"]
    for section in SECTIONS:
        found = report.lines[section]
        lines.append(f"{section}: {'the same' if not found else f'{len(found)} difference(s) (A | B)'}")
        lines += [f"  {line}" for line in found]
    return lines
