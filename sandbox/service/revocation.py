"""Revoking a token ends everything it started, wherever it is.

The rule (docs/service.md, Tokens): once a token is revoked

- its queued runs end `cancelled` ("the token that submitted it was revoked")
  and never start;
- its dispatched and running runs are cancelled as `POST .../cancel` would:
  killed in-process, or through the run's cancel key on a scale-out worker
  (which drops a message it has not started and kills a sandbox it runs);
- its open event streams (`/v1/runs/{id}/events`, `/v1/events`, and the web
  page's, which go through them) close.

Why here and not only at each check: a token is checked when a request
arrives, so a stream opened before the revocation kept delivering, a run
already running went on, and a worker, which cannot read the store, started a
dispatched run after the revocation (probe2 findings 5 and 10).

`sandbox token revoke` edits the store directly while the server may run, so
the server polls the store for revoked tokens (one small read, every
`POLL` seconds); a revocation through the API is applied at once.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from sandbox.service.events import Bus
from sandbox.service.periodic import Periodic
from sandbox.service.store import Store

log = logging.getLogger("sandbox.service")

REVOKED = "the token that submitted it was revoked"
POLL = 1.0          # seconds between the server's reads of the revoked tokens

class Revocations:
    """Notices revoked tokens and ends their runs and streams (one per server)."""

    def __init__(self, store: Store, bus: Bus, queue: Any) -> None:
        self.store, self.bus, self.queue = store, bus, queue
        self._lock = threading.Lock()
        self._done: set[str] = set()                       # revoked and swept
        self._streams: dict[str, set[Any]] = {}            # token id -> its open streams
        self._loop = Periodic("sandbox-revocations", POLL, self.sweep)

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        self.sweep()      # revoked while the server was down: their runs end now
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    # -- streams --------------------------------------------------------------
    def watch(self, token_id: str, q: Any) -> bool:
        """Register an open stream of `token_id`; False when the token is already
        revoked (the caller ends the stream)."""
        with self._lock:
            if token_id in self._done:
                return False
            self._streams.setdefault(token_id, set()).add(q)
            return True

    def unwatch(self, token_id: str, q: Any) -> None:
        with self._lock:
            subs = self._streams.get(token_id)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    self._streams.pop(token_id, None)

    # -- the sweep ------------------------------------------------------------
    def sweep(self) -> list[str]:
        """Apply every revocation not applied yet; the runs it ended or cancelled."""
        revoked = self.store.revoked_token_ids()
        with self._lock:
            new = revoked - self._done
            self._done |= new
            streams = [q for t in new for q in self._streams.pop(t, ())]
        for q in streams:
            self.bus.close(q)
        touched: list[str] = []
        for token_id in sorted(new):
            self.queue.forget_token(token_id)
            for run_id, _status in self.store.unfinished(token_id):
                try:
                    if self.queue.cancel(run_id, REVOKED):
                        touched.append(run_id)
                except Exception as exc:   # Redis away: swept again at the next poll
                    log.warning("run %s of revoked token %s: not cancelled: %s", run_id,
                                token_id, exc)
                    with self._lock:
                        self._done.discard(token_id)
        if touched:
            log.warning("revoked token(s) %s: %d run(s) ended or cancelled",
                        ", ".join(sorted(new)), len(touched))
        return touched
