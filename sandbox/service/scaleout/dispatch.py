"""The server's queue when a broker is configured: the same interface as the
in-process `sandbox.service.queue.RunQueue`, with Dramatiq workers as executors.

- **Dispatch.** The store stays the queue of record. A dispatcher thread claims
  queued runs (honouring each token's `max_concurrent`, as the in-process
  queue does) with a new attempt number and enqueues one Dramatiq message per
  attempt, carrying the request and the input files. Secret values are never
  written to the store nor put in a message: they wait under the run's
  `secrets` key (keys.py) with a TTL, and are deleted when the run ends.
- **Queues.** A run may name a queue (its `queue` label) only when a live
  worker serves it: a message to a queue nobody serves would wait in Redis
  for ever, and any name a tenant made up would become a Redis key.
- **Leases.** A reaper thread looks at every running run: an attempt that a
  worker started (its `started` mark) but whose lease is gone without a `done`
  mark lost its worker. With retries left it goes back to the queue (the next
  claim is attempt n+1); otherwise it ends `lost`. A Redis error is never read
  as a dead worker.
- **After a server restart** nothing is declared lost: workers keep running
  and reporting. A run claimed but never started is enqueued again under the
  same attempt (its `started` mark makes a duplicate message harmless).
- **Cancel.** A queued run ends here; a dispatched one gets the run's cancel
  key, which the worker holding the lease polls.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import threading
import time
from typing import Any

from sandbox.errors import InputError
from sandbox.service.config import ServiceConfig
from sandbox.service.events import Bus
from sandbox.service.queue import QueueBase
from sandbox.service.revocation import REVOKED
from sandbox.service.scaleout import keys
from sandbox.service.scaleout.messages import InputFile, Job
from sandbox.service.scaleout.reports import ReportApplier
from sandbox.service.store import RunRow, Store

log = logging.getLogger("sandbox.service")

DEFAULT_LEASE_MS = 10000
IDLE_PASS = 5.0      # seconds between dispatch passes while nothing in the store changes


class BrokerQueue(QueueBase):
    def __init__(self, store: Store, bus: Bus, config: ServiceConfig, broker_url: str,
                 lease_ms: int = DEFAULT_LEASE_MS) -> None:
        import redis
        from dramatiq.brokers.redis import RedisBroker
        super().__init__(store, bus, config)
        self.lease_ms = lease_ms
        self.redis = redis.Redis.from_url(broker_url)
        self.broker = RedisBroker(url=broker_url, middleware=[])
        self.reports = ReportApplier(self.redis, store, bus, config.output_dir,
                                     consumer=f"server-{config.hostname}",
                                     audit_dir=config.audit_dir)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._served: tuple[float, set[str]] | None = None

    # -- lifetime -------------------------------------------------------------
    def start(self) -> tuple[list[str], list[str]]:
        self.redis.ping()
        self.reports.start()
        redispatched = self._redispatch_unstarted()
        for target, name in ((self._dispatch_loop, "dispatch"), (self._reap_loop, "reaper")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return redispatched, []

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        self.reports.stop()

    # -- from the API ---------------------------------------------------------
    def cancel(self, run_id: str, reason: str | None = None) -> bool:
        """A queued run ends here; a dispatched one gets its cancel key (a run the
        dispatcher claims meanwhile is running by the time the key is read).
        `reason`: why a run that never started ended (default: a cancel)."""
        if self._cancel_queued(run_id, reason):
            return True
        row = self.store.run_head(run_id)
        if row is None or row.status != "running":
            return False
        self.redis.set(keys.cancel(run_id), "1", ex=keys.MARK_TTL)
        if not row.host:
            # handed to the broker, started by no worker: it ends here (a worker that
            # takes it later reads the cancel key and drops it). Before, a run sent to
            # a queue no worker serves stayed "running" however often it was cancelled.
            self._end_unstarted(run_id, row.attempts, "cancelled",
                                reason or "cancelled before a worker started it")
        return True

    def _end_unstarted(self, run_id: str, attempt: int, status: str, why: str) -> None:
        """End a claimed attempt no worker has started, and say so to its readers."""
        if self.store.finish(run_id, attempt, status, why, None, time.time()):
            self.redis.delete(keys.secrets(run_id))
            self.bus.publish(run_id, "exit", {"status": status, "exit_code": None,
                                              "reason": why})
            self.bus.forget(run_id)

    def check_labels(self, labels: dict[str, str]) -> None:
        """Refuse a `queue` label no live worker serves (the default queue is always
        taken: its runs wait for the first worker)."""
        queue = keys.queue_for(labels)
        if queue == keys.DEFAULT_QUEUE:
            return
        served = self._served_queues()
        if queue not in served:
            raise InputError(f"labels.queue: no live worker serves queue {queue!r} "
                             f"(served now: {', '.join(sorted(served))}); start one with "
                             f"`sandbox worker --queues {queue}`")

    def _hosts(self) -> list[str]:
        return [h.decode(errors="replace") if isinstance(h, bytes) else str(h)
                for h in self.redis.zrange(keys.WORKERS, 0, -1)]

    def _served_queues(self) -> set[str]:
        """The queues of workers whose heartbeat is current, cached for a second."""
        now = time.monotonic()
        cached = self._served
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        pipe = self.redis.pipeline(transaction=False)
        for h in self._hosts():
            pipe.hget(keys.worker(h), "queues")
        served = {keys.DEFAULT_QUEUE}
        for q in pipe.execute():
            if isinstance(q, bytes):
                served.update(n for n in q.decode(errors="replace").split(",") if n)
        self._served = (now, served)
        return served

    def running_count(self) -> int:
        return self.store.count("running")

    def workers(self) -> dict[str, Any]:
        """Queues, workers (from their heartbeats) and the leases of running runs,
        for `GET /v1/workers` and the workers page."""
        now = time.time()
        queues = {keys.DEFAULT_QUEUE} | set(self.broker.get_declared_queues() or ())
        hosts = self._hosts()
        pipe = self.redis.pipeline(transaction=False)
        for q in sorted(queues):
            pipe.llen(f"dramatiq:{q}")
        for h in hosts:
            pipe.hgetall(keys.worker(h))
        got = pipe.execute()
        depth = dict(zip(sorted(queues), got[:len(queues)]))
        workers = []
        for h, rec in zip(hosts, got[len(queues):]):
            d = {k.decode(): v.decode(errors="replace") for k, v in rec.items()}
            if not d:
                self.redis.zrem(keys.WORKERS, h)      # silent past its TTL
                continue
            workers.append({"host": d.get("host", h), "slots": int(d.get("slots", 0)),
                            "running": int(d.get("running", 0)),
                            "queues": [q for q in d.get("queues", "").split(",") if q],
                            "up_s": round(now - float(d.get("started_at", now)), 1),
                            "heartbeat_age_s": round(now - float(d.get("seen_at", now)), 2)})
        rows = self.store.heads("running", limit=1000)
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.pttl(keys.lease(row.id, row.attempts))
        ttls = pipe.execute() if rows else []
        leases = [{"run_id": row.id, "attempt": row.attempts, "host": row.host,
                   "lease_ttl_ms": int(ttl) if ttl is not None and int(ttl) >= 0 else None,
                   "lease_age_ms": (self.lease_ms - int(ttl))
                   if ttl is not None and int(ttl) >= 0 else None}
                  for row, ttl in zip(rows, ttls)]
        return {"broker": True, "lease_ms": self.lease_ms,
                "queues": [{"name": q, "depth": int(n)} for q, n in depth.items()],
                "workers": sorted(workers, key=lambda w: w["host"]), "leases": leases}

    # -- dispatch -------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        """A pass when the store changed since the last pass that sent nothing (a run
        queued or ended, a token revoked), else every IDLE_PASS seconds: a queued run
        waiting on its token's limit made every 0.2 s pass read every running run."""
        seen: tuple[int, int] | None = None
        last = 0.0
        while not self._stop.is_set():
            sent = 0
            try:
                now = time.monotonic()
                if seen is None or now - last >= IDLE_PASS or self.store.generation() != seen:
                    last = now
                    sent = self._dispatch_some()
                    seen = None if sent else self.store.generation()
            except Exception as exc:
                log.warning("dispatch: %s; retrying", exc)
                seen = None
                self._stop.wait(0.5)
            if not sent:
                with self._cond:
                    self._cond.wait(0.2)

    def _dispatch_some(self) -> int:
        queued = self.store.queued()
        if not queued:          # the idle loop's common case: no need to count running runs
            return 0
        running = self.store.running_per_token()
        sent = 0
        for run_id, token_id in queued:
            if self._stop.is_set():
                break
            if running.get(token_id, 0) >= self._limit(token_id):
                continue
            t0 = time.perf_counter()
            attempt = self.store.claim(run_id, time.time())
            if attempt is None:
                continue
            with self._cond:      # taken at the claim: no way out of here leaves them
                secrets = self._secrets.pop(run_id, {})
            tok = self.store.token(token_id)
            if tok is None or tok.revoked_at is not None:
                # as the in-process queue does: a revoked token's queued runs never
                # start (here all four queued before a revocation still ran)
                self._end_unstarted(run_id, attempt, "cancelled", REVOKED)
                continue
            running[token_id] = running.get(token_id, 0) + 1
            # claimed = handed to the broker: no host and no start time until a
            # worker reports that it started the attempt
            self.store.mark_started(run_id, attempt, "", None)
            claimed = self.store.run(run_id)
            if claimed is None:
                continue
            if secrets:     # a retry finds them still there (NX: never overwritten)
                self.redis.set(keys.secrets(run_id), json.dumps(secrets),
                               ex=keys.SECRET_TTL, nx=True)
            shutil.rmtree(self.config.output_dir(run_id), ignore_errors=True)
            self._enqueue(claimed, attempt, t0)
            sent += 1
        return sent

    def _job(self, row: RunRow, attempt: int, t0: float | None = None) -> Job:
        tok = self.store.token(row.token_id)
        files = []
        inp = self.config.input_dir(row.id)
        for name in row.request.get("files") or []:
            path = os.path.join(inp, name)
            with open(path, "rb") as f:   # written by the service itself, never by a run
                data = f.read()
            files.append(InputFile(name=name, content_b64=base64.b64encode(data).decode(),
                                   executable=bool(os.stat(path).st_mode & 0o100)))
        request = dict(row.request)
        if request.pop("stdin_bytes", None) is not None:
            # kept out of the store (a file beside the run's inputs), but a worker
            # reads it from its message
            with open(self.config.stdin_file(row.id), "rb") as f:
                request["stdin_b64"] = base64.b64encode(f.read()).decode()
        return Job(run_id=row.id, attempt=attempt, kind=row.kind,  # type: ignore[arg-type]
                   request=request, token_id=row.token_id,
                   token_name=tok.name if tok is not None else "(deleted)",
                   ceiling=tok.ceiling if tok is not None else None,
                   admin=tok is not None and tok.admin,
                   has_secrets=row.has_secrets, files=files,
                   lease_ms=self.lease_ms, dispatched_at=time.time(),
                   claim_ms=0.0 if t0 is None else (time.perf_counter() - t0) * 1000)

    def _enqueue(self, row: RunRow, attempt: int, t0: float | None = None) -> None:
        from dramatiq import Message
        job = self._job(row, attempt, t0)
        queue = keys.queue_for(row.request.get("labels"))
        self.broker.declare_queue(queue)
        self.broker.enqueue(Message(queue_name=queue, actor_name=keys.ACTOR,
                                    args=(job.model_dump(),), kwargs={}, options={}))

    def _redispatch_unstarted(self) -> list[str]:
        """After a restart: running runs whose attempt never started (the server died
        between claim and enqueue, or the message is still queued) are enqueued
        again under the same attempt; the worker's `started` mark drops the
        duplicate."""
        again = []
        for head in self.store.heads("running"):
            if not self.redis.exists(keys.started(head.id, head.attempts)):
                row = self.store.run(head.id)
                if row is not None and row.status == "running":
                    self._enqueue(row, row.attempts)
                    again.append(row.id)
        return again

    # -- leases ---------------------------------------------------------------
    def _reap_loop(self) -> None:
        while not self._stop.wait(min(1.0, self.lease_ms / 4000)):
            try:
                self.reap()
            except Exception as exc:
                log.warning("lease check: %s; retrying", exc)

    def reap(self) -> list[str]:
        """End or re-queue every running attempt whose worker stopped renewing."""
        rows = self.store.heads("running")
        if not rows:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.exists(keys.started(row.id, row.attempts))
            pipe.exists(keys.lease(row.id, row.attempts))
            pipe.exists(keys.done(row.id, row.attempts))
        flags = pipe.execute()
        dead = []
        for i, row in enumerate(rows):
            started, leased, done = flags[3 * i: 3 * i + 3]
            if started and not leased and not done:
                dead.append(row)
        ended = []
        for row in dead:
            host: Any = self.redis.get(keys.started(row.id, row.attempts))
            who = host.decode(errors="replace") if isinstance(host, bytes) else "its worker"
            if self.store.requeue(row.id, row.attempts):
                log.warning("run %s: %s stopped renewing the lease of attempt %d; re-queued",
                            row.id, who, row.attempts)
                self.bus.publish(row.id, "queued", {"status": "queued",
                                                    "reason": f"{who} was lost; retrying"})
                with self._cond:
                    self._cond.notify()
            elif self.store.finish(row.id, row.attempts, "lost",
                                   f"its worker ({who}) stopped renewing its lease; "
                                   "no retries were allowed", None, time.time()):
                self.redis.delete(keys.secrets(row.id))
                self.bus.publish(row.id, "exit", {"status": "lost", "exit_code": None,
                                                  "reason": f"its worker ({who}) was lost"})
                self.bus.forget(row.id)
            ended.append(row.id)
        return ended
