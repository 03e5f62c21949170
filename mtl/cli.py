"""``mtl-train``: one multi-task run, configured by ``--key value`` / ``--key=value`` / ``--config FILE``.

Exit codes: 0 finished (or already finished), 1 failed, 2 bad config or refused resume, 3 diverged,
4 run directory in use, 143 stopped by SIGTERM/SIGINT after writing a checkpoint.
"""

from __future__ import annotations

import sys
import traceback

from mtl.config import ConfigError, config_from_cli, help_text

EXIT_FAILED, EXIT_REFUSED, EXIT_DIVERGED, EXIT_LOCKED, EXIT_STOPPED = 1, 2, 3, 4, 143
USAGE = "usage: mtl-train [--config FILE.yaml ...] [--key value | --key=value ...]\n\nkeys:\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE + help_text())
        return 0
    try:
        cfg = config_from_cli(argv)
    except ConfigError as exc:
        print(f"mtl-train: {exc}", file=sys.stderr)
        return EXIT_REFUSED

    from mtl.engine import RunDirectory, RunRefused, train

    try:
        status = train(cfg)
    except RunRefused as exc:
        print(f"mtl-train: {exc}", file=sys.stderr)
        return EXIT_LOCKED if "in use by another process" in str(exc) else EXIT_REFUSED
    except Exception as exc:  # noqa: BLE001 - record any failure in status.json, then exit non-zero
        message = f"{type(exc).__name__}: {exc}"
        RunDirectory(cfg.log_dir).write_status(state="failed", error=message, traceback=traceback.format_exc())
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


if __name__ == "__main__":
    sys.exit(main())
