"""A worker's lease on one attempt: taken once, renewed, and given up.

Dramatiq refreshes a worker's heartbeat only when it fetches or acknowledges
a message, so a worker busy with one long run looks dead to the broker
(dramatiq #692). The service does not rely on it: each attempt has its own
lease key with a TTL, renewed here every `lease_ms / 4`. The server's reaper
reads a missing lease (and no `done` mark) as a dead worker.

The other half of "never twice at once": a worker that cannot renew (Redis
unreachable, or the key gone) kills its sandbox once `KILL_AT` of the TTL has
passed since the last renewal, before the lease can expire and the server
hand the run to someone else. The same loop polls the run's cancel key, so a
cancel reaches the sandbox within one renewal interval.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sandbox.service.scaleout import keys

log = logging.getLogger("sandbox.worker")

KILL_AT = 0.6          # fraction of the TTL without a renewal after which the run is killed
CANCEL_POLL = 0.25     # seconds; the renewal interval is at most this


_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"""


class Lease:
    def __init__(self, redis: Any, run_id: str, attempt: int, host: str, ttl_ms: int,
                 cancel: threading.Event) -> None:
        self.redis, self.run_id, self.attempt, self.host = redis, run_id, attempt, host
        self.ttl_ms = ttl_ms
        self.cancel = cancel
        self.why: str | None = None          # why the run was killed, if it was
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key = keys.lease(run_id, attempt)

    def take(self) -> bool:
        """Mark the attempt started (once, ever) and take its lease. False: this
        attempt already started somewhere (a redelivered message)."""
        # One script, so the reaper never sees the mark without the lease of a live
        # worker, and the lease never overwrites a holder's when the mark exists.
        return bool(self.redis.eval(_TAKE, 2, keys.started(self.run_id, self.attempt),
                                    self._key, self.host, keys.MARK_TTL, self.ttl_ms))

    def cancelled(self) -> bool:
        return bool(self.redis.exists(keys.cancel(self.run_id)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name=f"lease-{self.run_id}")
        self._thread.start()

    def _kill(self, why: str) -> None:
        if not self.cancel.is_set():
            self.why = why
            log.warning("run %s attempt %d: %s; killing its sandbox", self.run_id,
                        self.attempt, why)
            self.cancel.set()

    def _renew(self) -> None:
        interval = min(CANCEL_POLL, self.ttl_ms / 4000)
        last_ok = time.monotonic()
        while not self._stop.wait(interval):
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.pexpire(self._key, self.ttl_ms)
                pipe.exists(keys.cancel(self.run_id))
                renewed, cancelled = pipe.execute()
            except Exception as exc:   # Redis away: keep trying until the kill point
                if time.monotonic() - last_ok > KILL_AT * self.ttl_ms / 1000:
                    self._kill(f"could not renew its lease ({exc.__class__.__name__})")
                continue
            if not renewed:
                self._kill("its lease was gone (expired or taken)")
                continue
            last_ok = time.monotonic()
            if cancelled:
                self._kill("cancelled")

    def finish(self) -> None:
        """The final report is on the stream: mark the attempt done, drop the lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for _ in range(100):
            try:
                pipe = self.redis.pipeline(transaction=True)
                pipe.set(keys.done(self.run_id, self.attempt), self.host, ex=keys.MARK_TTL)
                pipe.delete(self._key)
                pipe.execute()
                return
            except Exception:
                time.sleep(0.2)
