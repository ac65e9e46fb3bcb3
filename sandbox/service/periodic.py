"""One background chore of the server, repeated: retention, revocation polling.

The loop outlives any one failure (the store busy, a file gone): the error is
logged and the next tick tries again, since housekeeping never takes the
server down.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("sandbox.service")


class Periodic:
    """Calls `fn` every `interval` seconds on a daemon thread, from start() to stop()."""

    def __init__(self, name: str, interval: float, fn: Callable[[], object]) -> None:
        self.name, self.interval, self.fn = name, interval, fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.fn()
            except Exception as exc:
                log.warning("%s: %s; retrying", self.name, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
