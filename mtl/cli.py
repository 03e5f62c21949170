"""``mtl-train``: one multi-task run, configured by ``--key value`` / ``--key=value`` / ``--config FILE``.

Exit codes: 0 finished (or already finished), 1 failed, 2 bad config or refused resume, 3 diverged,
4 run directory in use, 143 stopped by SIGTERM/SIGINT after writing a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import traceback

from mtl.config import ConfigError, config_from_cli, help_text

EXIT_FAILED, EXIT_REFUSED, EXIT_DIVERGED, EXIT_LOCKED, EXIT_STOPPED = 1, 2, 3, 4, 143
USAGE = "usage: mtl-train [--config FILE.yaml ...] [--key value | --key=value ...]\n\nkeys:\n"


_stop_signals: list[int] = []  # SIGTERM/SIGINT received before the engine is imported


def _remember_stop_signal(signum: int, _frame: object) -> None:
    _stop_signals.append(signum)


def main(argv: list[str] | None = None) -> int:
    # From the first line on, a SIGTERM (preemption) or SIGINT is remembered rather than fatal, so the
    # run stops cleanly -- checkpoint, status "interrupted", exit 143 -- whenever it arrives.
    signal.signal(signal.SIGTERM, _remember_stop_signal)
    signal.signal(signal.SIGINT, _remember_stop_signal)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE + help_text())
        return 0
    try:
        cfg = config_from_cli(argv)
    except ConfigError as exc:
        print(f"mtl-train: {exc}", file=sys.stderr)
        return EXIT_REFUSED

    from mtl import engine
    from mtl.engine import RunDirectory, RunRefused, train

    signal.signal(signal.SIGTERM, engine.remember_stop_signal)
    signal.signal(signal.SIGINT, engine.remember_stop_signal)
    engine.pending_stop_signals.extend(_stop_signals)
    if engine.pending_stop_signals:
        print(f"mtl-train: stopped by signal {engine.pending_stop_signals[-1]} before the run started; "
              "nothing was written", file=sys.stderr)
        return EXIT_STOPPED
    try:
        status = train(cfg)
    except RunRefused as exc:
        print(f"mtl-train: {exc}", file=sys.stderr)
        return EXIT_LOCKED if "in use by another process" in str(exc) else EXIT_REFUSED
    except Exception as exc:  # noqa: BLE001 - record any failure in status.json, then exit non-zero
        message = error_message(exc)
        try:
            RunDirectory(cfg.log_dir).write_status(state="failed", error=message, traceback=traceback.format_exc())
        except OSError as status_error:  # the disk that failed the run may refuse this write too
            print(f"mtl-train: could not record the failure in status.json: {status_error}", file=sys.stderr)
        print(f"mtl-train: run failed: {message}", file=sys.stderr)
        traceback.print_exc()
        return EXIT_FAILED
    state = status.get("state")
    best = status.get("best") or {}
    if state == "finished":
        print(f"mtl-train: finished {cfg.log_dir}: best grader {best.get('grader', float('nan')):.2f} "
              f"(IoU {best.get('iou', float('nan')):.2f}, SI-logRMSE {best.get('si_logrmse', float('nan')):.2f}) "
              f"at step {best.get('step')}")
        return 0
    print(f"mtl-train: {state}: {status.get('error')}", file=sys.stderr)
    return {"diverged": EXIT_DIVERGED, "interrupted": EXIT_STOPPED}.get(state, EXIT_FAILED)


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
