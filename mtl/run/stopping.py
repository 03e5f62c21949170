"""Stop signals: remembered, never fatal, so a run stops cleanly (checkpoint, ``interrupted``, exit 143).

``mtl-train`` installs the handlers on its first line; the trainer reads the same holder, so a signal
that arrives while the run is being set up still ends it through a checkpoint. The signals are those a
run is stopped with: SIGTERM (``scancel``, preemption, a container stopping), SIGINT (Ctrl-C), SIGUSR2
(SLURM's warning before the time limit, as submitit asks for it), SIGHUP (the terminal closed) and SIGUSR1
(a W&B sweep stopping its run: the sweep program turns the agent's stop into it, see
mtl.ablate.sweep_run). Each may reach the whole process group, so DataLoader workers ignore them
(:func:`ignore_stop_signals`) and leave the stopping to the trainer.

Every stop ends the run ``interrupted`` with a checkpoint, and anything that resumes it continues it; a
stop by SIGUSR1 alone is final for W&B: the run is not marked preempting, so its sweep does not hand it to
an agent again (:attr:`StopSignals.requeue`).
"""

from __future__ import annotations

import signal
from typing import Any, Optional

STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGHUP, signal.SIGUSR1)
# Stops that ask for no requeue: the run's W&B sweep stopped it (early termination, or a stop from the sweep).
FINAL_SIGNALS: tuple[int, ...] = (signal.SIGUSR1,)

# Who usually sends each one, for the status a stopped run records.
SENDERS = {
    signal.SIGTERM: "scancel, preemption or a container stop",
    signal.SIGINT: "Ctrl-C",
    signal.SIGUSR2: "time limit",
    signal.SIGHUP: "terminal closed",
    signal.SIGUSR1: "its W&B sweep stopped it",
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

    @property
    def requeue(self) -> bool:
        """Whether the stop asks to be continued by whoever runs it next (a cluster's requeue, a sweep's): every
        stop but one by :data:`FINAL_SIGNALS` alone. A preemption that also reaches a run its sweep is
        stopping still asks to be requeued."""
        return any(signum not in FINAL_SIGNALS for signum in self.received)

    def describe(self) -> str:
        """The latest signal by name (``SIGUSR2 (time limit)``); "no signal" if none arrived."""
        return describe_signal(self.last) if self.last is not None else "no signal"
