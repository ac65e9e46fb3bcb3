"""Per-token submission rate: a token bucket of `rate` per second, burst = max(1, rate)."""
from __future__ import annotations

import math
import threading
import time

from sandbox.service.runs import QuotaExceeded
from sandbox.service.store import TokenRow


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}   # token id -> (tokens, stamp)

    def check(self, tok: TokenRow) -> None:
        """QuotaExceeded (429, Retry-After) when `tok` submits faster than its rate."""
        if tok.rate is None or tok.admin:
            return
        burst = max(1.0, tok.rate)
        now = time.monotonic()
        with self._lock:
            have, stamp = self._buckets.get(tok.id, (burst, now))
            have = min(burst, have + (now - stamp) * tok.rate)
            if have < 1.0:
                self._buckets[tok.id] = (have, now)
                wait = (1.0 - have) / tok.rate
                raise QuotaExceeded(f"token {tok.name!r} submits faster than its rate "
                                    f"({tok.rate:g}/s)", retry_after=max(1, math.ceil(wait)))
            self._buckets[tok.id] = (have - 1.0, now)
