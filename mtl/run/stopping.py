"""Stop signals: remembered, never fatal, so a run stops cleanly (checkpoint, ``interrupted``, exit 143).

``mtl-train`` installs the handlers on its first line; the trainer reads the same holder, so a signal
that arrives while the run is being set up still ends it through a checkpoint. The signals are those a
run is stopped with: SIGTERM (``scancel``, preemption, a container stopping), SIGINT (Ctrl-C), SIGUSR2
(SLURM's warning before the time limit, as submitit asks for it) and SIGHUP (the terminal closed). Each
reaches the whole process group, so DataLoader workers ignore them (:func:`ignore_stop_signals`) and
leave the stopping to the trainer.
"""

from __future__ import annotations

import signal
from typing import Any, Optional

STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGHUP)

# Who usually sends each one, for the status a stopped run records.
SENDERS = {
    signal.SIGTERM: "scancel, preemption or a container stop",
    signal.SIGINT: "Ctrl-C",
    signal.SIGUSR2: "time limit",
    signal.SIGHUP: "terminal closed",
}


def describe_signal(signum: int) -> str:
    """``SIGUSR2 (time limit)``: the signal by name, and who usually sends it."""
    try:
        known = signal.Signals(signum)
    except ValueError:
        return f"signal {signum}"
    return f"{known.name} ({SENDERS[known]})" if known in SENDERS else known.name


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: a stop signal sent to the process group must not kill a worker
    (the trainer would fail with "DataLoader worker is killed"); the trainer stops them itself. Touches
    no random state, so batches stay exactly those of a run without it."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopSignals:
    """The stop signals received so far by this process."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: list[int] = []

    def install(self) -> None:
        """Remember ``signals`` from now on instead of dying (main thread only, as for ``signal.signal``)."""
        for signum in self.signals:
            signal.signal(signum, self._remember)

    def _remember(self, signum: int, _frame: Any = None) -> None:
        self.received.append(signum)

    @property
    def last(self) -> Optional[int]:
        """The latest signal received, None if none."""
        return self.received[-1] if self.received else None

    def describe(self) -> str:
        """The latest signal by name (``SIGUSR2 (time limit)``); "no signal" if none arrived."""
        return describe_signal(self.last) if self.last is not None else "no signal"
