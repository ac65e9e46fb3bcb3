"""RunHandle: a sandbox started with `Launcher.start`, seen from the caller.

Modelled on Sandbox2's RunAsync/AwaitResult/Kill and on
`concurrent.futures.Future` (which holds the result): `wait(timeout)` blocks
for the RunResult, `cancel()` kills the sandbox (or stops it from starting),
`result()` is the RunResult once done (None before), `run_id` is known at
once and `pid` (the host pid of the run's monitor, whose process tree holds
the sandbox) as soon as the monitor started. The result is held by an Event and
a slot, not a `concurrent.futures.Future`: every run makes a handle, and that
package imports `logging` (~7 ms of a cold `sandbox exec`'s start here).
"""
from __future__ import annotations

import threading

from sandbox.launcher.result import RunResult


class RunHandle:
    def __init__(self, run_id: str, cancel: threading.Event | None = None) -> None:
        self.run_id = run_id
        self.cancel_event = cancel if cancel is not None else threading.Event()
        self._done = threading.Event()
        self._result: RunResult | None = None
        self._exc: BaseException | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        """Host pid of the run's monitor (None until it started, and after setup failed)."""
        return self._pid

    def cancel(self) -> None:
        """Kill the sandbox (status "cancelled"); a run not started yet never starts."""
        self.cancel_event.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunResult:
        """The RunResult, waiting at most `timeout` seconds (TimeoutError after).
        Re-raises what the spawn raised (e.g. InputError for a bad policy)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id} still running after {timeout}s")
        return self._outcome()

    def result(self) -> RunResult | None:
        """The RunResult if the run is over, else None (never blocks); re-raises what
        the spawn raised, as `wait` does."""
        return self._outcome() if self._done.is_set() else None

    def _outcome(self) -> RunResult:
        if self._exc is not None:
            raise self._exc
        assert self._result is not None
        return self._result

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<RunHandle {self.run_id[:12]} {state} pid={self._pid}>"

    # -- for the launcher --------------------------------------------------
    def _started(self, pid: int) -> None:
        self._pid = pid

    def _finish(self, result: RunResult | None, exc: BaseException | None = None) -> None:
        """Once, by the launcher: the run's result, or what its spawn raised."""
        if self._done.is_set():
            raise RuntimeError(f"run {self.run_id} finished twice")
        if exc is None and result is None:
            raise ValueError("a finished run has a result or an exception")
        self._result, self._exc = result, exc
        self._done.set()
