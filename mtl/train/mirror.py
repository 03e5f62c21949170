"""A finished run mirrored into another W&B run: the one a W&B sweep's agent started for a point whose run
had already finished (trained by ``mtl-ablate run`` or another agent, or an identical run of another entry
that this entry reuses).

W&B knows the sweep's run by the id the agent assigned; left empty, the sweep would show a point without
results. The mirror gives that W&B run the whole trace and the summary of the records, names the run
directory's earlier W&B run (mtl.train.tracking.wandb_identity), and the status then records it, so
readers collapse the W&B runs of one run directory into one (report.wandb_store).
"""

from __future__ import annotations

from pathlib import Path

from mtl.config import Config
from mtl.run.layout import RunDirectory
from mtl.run.status import StatusWriter
from mtl.run.trace import read_trace
from mtl.train.tracking import WandbSink, records_summary, wandb_identity


def mirror_finished(cfg: Config, run_dir: Path) -> str | None:
    """Mirror the finished run in ``run_dir`` into the W&B run ``cfg.wandb_run_id`` (group, job type and
    config from ``cfg``); returns that id, or None when nothing was mirrored (the W&B run mirrors the
    directory already, or W&B is off). Holds the run's lock (RunLocked: another process has it)."""
    run = RunDirectory(run_dir)
    with run.exclusive():
        status = StatusWriter(run)
        recorded = status.status.wandb_run_id if status.status else None
        identity = wandb_identity(cfg.wandb_run_id, recorded, run.path)
        if identity.holds_history:
            return None
        sink = WandbSink(cfg, run.path, identity.run_id, continues=identity.continues, holds_history=False)
        sink.carry(lambda: read_trace(run.metrics), lambda: records_summary(status.status))
        run_id, url = sink.run_id, sink.url
        sink.finish()
        if run_id is None:
            return None
        status.record(wandb_run_id=run_id, wandb_url=url)
        return run_id
