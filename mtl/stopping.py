"""Stop signals: remembered, never fatal, so a run stops cleanly (checkpoint, ``interrupted``, exit 143).

``mtl-train`` installs the handlers on its first line; the trainer reads the same holder, so a signal
that arrives while the run is being set up still ends it through a checkpoint.
"""

from __future__ import annotations

import signal
from typing import Any, Optional

STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


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
