"""``mtl-train``: one multi-task run, configured by ``--key value`` / ``--key=value`` / ``--config FILE``.

Exit codes (``mtl.run.model.ExitCode``): 0 finished (or already finished), 1 failed, 2 bad config or refused
resume, 3 diverged, 4 run directory in use, 5 cannot run here (ImageNet weights unavailable; recorded
as skipped), 6 paused after the epoch it was asked to stop after (``stop_after_epoch``, a racing rung), 143
stopped by SIGTERM/SIGINT/SIGUSR2/SIGHUP/SIGUSR1 (``mtl.run.stopping.STOP_SIGNALS``) after writing
a checkpoint.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback

from mtl.config import ConfigError, config_from_cli, help_text
from mtl.run.errors import RunLocked, RunRefused
from mtl.run.layout import RunDirectory
from mtl.run.model import ExitCode, RunState
from mtl.run.status import StatusWriter
from mtl.run.stopping import StopSignals

USAGE = "usage: mtl-train [--config FILE.yaml ...] [--key value | --key=value ...]\n\nkeys:\n"


def main(argv: list[str] | None = None) -> int:
    # From the first line on, a stop signal (preemption, time limit, Ctrl-C, closed terminal) is remembered
    # rather than fatal, so the run stops cleanly -- checkpoint, status "interrupted", exit 143 -- whenever it arrives.
    stop = StopSignals()
    stop.install()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:  # anywhere on the line: `mtl-train --log_dir X --help` asks for help too
        print(USAGE + help_text())
        return 0
    try:
        cfg = config_from_cli(argv)
    except ConfigError as exc:
        print(f"mtl-train: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    # What this machine lacks is refused like a bad value, before the run directory or anything else exists:
    # a missing device or dataset folder is the environment's failure, never recorded as the run's.
    problem = _device_problem(cfg.device) or _dataset_problem(cfg)
    if problem:
        print(f"mtl-train: {problem}", file=sys.stderr)
        return ExitCode.REFUSED

    if stop.received:
        print(f"mtl-train: stopped by {stop.describe()} before the run started; "
              "nothing was written", file=sys.stderr)
        return ExitCode.STOPPED
    try:
        return _train_and_report(cfg, stop)
    finally:
        end_loader_workers()


def _device_problem(device: str) -> str | None:
    """Why this machine cannot run on ``device`` (mtl.train.runtime.device_problem), or None; torch is loaded
    only for a CUDA device."""
    if device in ("auto", "cpu"):
        return None
    from mtl.train.runtime import device_problem

    return device_problem(device)


def _dataset_problem(cfg) -> str | None:
    """Why the dataset folder of ``cfg`` is not there (mtl.data.dataset_problem), or None."""
    if cfg.dataset == "synthetic":
        return None
    from mtl.data import dataset_problem

    return dataset_problem(cfg)


def end_loader_workers() -> None:
    """Kill the DataLoader workers still alive. They ignore stop signals (so one sent to the whole process
    group reaches the trainer alone, which checkpoints), and a loader left behind by a failed epoch -- kept
    alive by the traceback that holds its iterator -- would make the interpreter's exit, which stops its
    daemonic children with SIGTERM and then waits, wait forever."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join()


def _train_and_report(cfg, stop: StopSignals) -> int:
    from mtl.data.synthetic import BuildStopped
    from mtl.models.encoder import PretrainedWeightsUnavailable
    from mtl.train.engine import train

    try:
        status = train(cfg, stop)
    except BuildStopped as exc:
        # Stopped before this attempt trained anything: nothing to checkpoint; the next start builds the dataset.
        message = f"{exc}; nothing was trained"
        try:
            _record_build_stop(RunDirectory(cfg.log_dir), message)
        except OSError as status_error:
            print(f"mtl-train: could not record the stop in the run status: {status_error}", file=sys.stderr)
        print(f"mtl-train: {message}", file=sys.stderr)
        return ExitCode.STOPPED
    except RunLocked as exc:
        print(f"mtl-train: {exc}", file=sys.stderr)
        return ExitCode.LOCKED
    except RunRefused as exc:
        print(f"mtl-train: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    except PretrainedWeightsUnavailable as exc:
        # Not a failure of the run: this machine cannot run it (offline, no weights file). Recorded as
        # skipped with the reason, so a suite chooses among the variants that ran and says so.
        message = error_message(exc)
        try:
            StatusWriter(RunDirectory(cfg.log_dir)).skipped(error=message)
        except OSError as status_error:
            print(f"mtl-train: could not record the skip in the run status: {status_error}", file=sys.stderr)
        print(f"mtl-train: run skipped, it cannot run here: {message}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except Exception as exc:  # noqa: BLE001 - record any failure in the run's status, then exit non-zero
        message = error_message(exc)
        try:
            StatusWriter(RunDirectory(cfg.log_dir)).failed(error=message, traceback=traceback.format_exc())
        except OSError as status_error:  # the disk that failed the run may refuse this write too
            print(f"mtl-train: could not record the failure in the run status: {status_error}", file=sys.stderr)
        print(f"mtl-train: run failed: {message}", file=sys.stderr)
        traceback.print_exc()
        return ExitCode.FAILED
    best = status.best
    if status.state is RunState.FINISHED:
        headline = f"best {best.headline()} at step {best.step}" if best is not None else "no best point"
        print(f"mtl-train: finished {cfg.log_dir}: {headline}")
        return ExitCode.FINISHED
    if status.state is RunState.PAUSED:
        print(f"mtl-train: paused after epoch {status.epoch}/{cfg.num_epochs} (stop_after_epoch); "
              f"checkpoint kept in {RunDirectory(cfg.log_dir).last}")
        return ExitCode.PAUSED
    print(f"mtl-train: {status.state}: {status.error}", file=sys.stderr)
    return {RunState.DIVERGED: ExitCode.DIVERGED, RunState.INTERRUPTED: ExitCode.STOPPED}.get(status.state,
                                                                                            ExitCode.FAILED)


def _record_build_stop(run: RunDirectory, message: str) -> None:
    """Record a run stopped during its dataset build as interrupted; a finished run that was rebuilding lost
    files (a submission) stays finished, as its records say."""
    status = StatusWriter(run)
    if status.status is None or status.status.state is not RunState.FINISHED:
        status.record(state=RunState.INTERRUPTED, error=message)


def error_message(exc: BaseException) -> str:
    """``Type: message``. An error raised in a DataLoader worker arrives re-raised with the worker's whole
    traceback as its message; keep only the original message at its end (it names the file)."""
    text = str(exc)
    if "Original Traceback" in text:
        for marker in (f"{type(exc).__module__}.{type(exc).__qualname__}: ", f"\n{type(exc).__qualname__}: "):
            if marker in text:
                text = text[text.rindex(marker) + len(marker):].strip()
                break
    return f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
