"""What W&B holds of offline runs, read from their ``.wandb`` files with wandb's own protobuf ``Record``:
records, and each run (one id, all its files: a resumed offline run writes a file per attempt) as a
:class:`wandb_fake.FakeWandbRun`, so the W&B readers can be tested on what the trainer really logged.

The run is rebuilt as a server would from ``wandb sync`` of its files in start order: the run record's
name, group, job type and config, config updates, every history row (``_step`` counted on across files),
the summary from the summary records wandb's service writes (it computes ``define_metric`` summaries such
as val/grader's ``{"max": ...}`` itself), and the state from the last file's end: exit 0 finished, a
non-zero exit after ``mark_preempting`` preempted, another non-zero exit failed, no exit crashed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb_fake import FakeWandbRun

BLOCK = 32768  # the LevelDB log format's block size


def read_records(path: Path) -> list[Any]:
    """The records of a ``.wandb`` file (a LevelDB-format log of protobuf records after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += BLOCK - pos % BLOCK
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


@dataclass
class OfflineRun:
    """One W&B run as its offline files hold it."""

    run_id: str
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    state: str = "crashed"
    preempting: bool = False
    exit_codes: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def add_file(self, path: Path) -> None:
        self.files.append(path)
        ended, preempting = None, False
        for record in read_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                self.name, self.group, self.job_type = run.display_name, run.run_group, run.job_type
                self.project = run.project
                self.config.update({_key(i): json.loads(i.value_json) for i in run.config.update})
            elif kind == "config":
                self.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                row = {_key(i): json.loads(i.value_json) for i in record.history.item}
                row["_step"] = len(self.history)  # appended after the earlier files' rows, as a sync resumes
                self.history.append(row)
            elif kind == "summary":
                self.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
                for item in record.summary.remove:
                    self.summary.pop(_key(item), None)
            elif kind == "preempting":
                preempting = True
            elif kind == "exit":
                ended = record.exit.exit_code
                self.exit_codes.append(ended)
        self.preempting = preempting
        if ended is None:
            self.state = "crashed"
        else:
            self.state = "finished" if ended == 0 else "preempted" if preempting else "failed"

    def rows(self, key: str = "trainer/step") -> list[dict[str, Any]]:
        """The history rows that hold ``key``, without W&B's own keys."""
        return [{k: v for k, v in row.items() if not k.startswith("_")} for row in self.history if key in row]

    def fake(self, entity: str = "team") -> FakeWandbRun:
        """The run as the W&B API stand-in lists it."""
        run = FakeWandbRun(run_id=self.run_id, name=self.name, group=self.group or None,
                           job_type=self.job_type or None, state=self.state, config=self.config, history=[],
                           entity=entity, project=self.project)
        run._history = [dict(row) for row in self.history]
        run._summary = {k: v for k, v in self.summary.items() if not k.startswith("_")}
        return run


def offline_runs(*roots: Path) -> dict[str, OfflineRun]:
    """Run id -> the offline W&B run of every ``offline-run-*`` folder under ``roots``, files in start order."""
    import wandb

    wandb.teardown()  # a service still running may hold the last records
    runs: dict[str, OfflineRun] = {}
    def started(folder: Path) -> tuple[str, float]:  # offline-run-YYYYMMDD_HHMMSS-<id>; the second may be shared
        return folder.name.split("-")[2], min(p.stat().st_mtime for p in folder.glob("*.wandb"))

    folders = sorted({p.parent for root in roots for p in Path(root).rglob("offline-run-*/*.wandb")}, key=started)
    for folder in folders:
        (path,) = folder.glob("*.wandb")
        run_id = folder.name.split("-", 3)[3]
        runs.setdefault(run_id, OfflineRun(run_id)).add_file(path)
    return runs
