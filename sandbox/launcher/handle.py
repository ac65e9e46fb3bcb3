"""RunHandle: a sandbox started with `Launcher.start`, seen from the caller.

Modelled on Sandbox2's RunAsync/AwaitResult/Kill and on
`concurrent.futures.Future` (which holds the result): `wait(timeout)` blocks
for the RunResult, `cancel()` kills the sandbox (or stops it from starting),
`result()` is the RunResult once done (None before), `run_id` is known at
once and `pid` (the host pid of the run's monitor, whose process tree holds
the sandbox) as soon as the monitor started.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading

from sandbox.launcher.result import RunResult


class RunHandle:
    def __init__(self, run_id: str, cancel: threading.Event | None = None) -> None:
        self.run_id = run_id
        self.cancel_event = cancel if cancel is not None else threading.Event()
        self._future: cf.Future[RunResult] = cf.Future()
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        """Host pid of the run's monitor (None until it started, and after setup failed)."""
        return self._pid

    def cancel(self) -> None:
        """Kill the sandbox (status "cancelled"); a run not started yet never starts."""
        self.cancel_event.set()

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> RunResult:
        """The RunResult, waiting at most `timeout` seconds (TimeoutError after).
        Re-raises what the spawn raised (e.g. InputError for a bad policy)."""
        try:
            return self._future.result(timeout)
        except cf.TimeoutError:
            raise TimeoutError(f"run {self.run_id} still running after {timeout}s") from None

    def result(self) -> RunResult | None:
        """The RunResult if the run is over, else None (never blocks)."""
        return self._future.result() if self._future.done() else None

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<RunHandle {self.run_id[:12]} {state} pid={self._pid}>"

    # -- for the launcher --------------------------------------------------
    def _started(self, pid: int) -> None:
        self._pid = pid

    def _finish(self, result: RunResult | None, exc: BaseException | None = None) -> None:
        if exc is not None:
            self._future.set_exception(exc)
        else:
            assert result is not None
            self._future.set_result(result)
