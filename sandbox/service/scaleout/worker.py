"""`sandbox worker`: one host's executor of runs the API server hands out through
Dramatiq on Redis.

A worker runs each message with the same code the single-machine service uses
(`sandbox.service.runs.Runs.execute`), given a store and an event bus that
are stand-ins for the server's: every event it would publish and the final
result it would store become Reports on the Redis stream, and the server
applies them (fenced by the attempt). Before the result, the run's outputs
travel the same way, regular files only, never following a link the run
planted. The worker's local copies of a run's inputs and outputs are deleted
when the attempt ends: the server's store is the one record.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from sandbox.service.scaleout import keys
from sandbox.service.scaleout.lease import Lease
from sandbox.service.scaleout.messages import MAX_CHUNK, Job, Report

log = logging.getLogger("sandbox.worker")

MAX_SHIPPED = 256 * 1024 * 1024    # bytes of outputs one attempt sends back
MAX_REFUSED_EVENTS = 100           # output names refused one by one in the run's events
REPORT_RETRY = 120.0               # seconds a report is retried while Redis is away
HEARTBEAT_EVERY = 2.0              # seconds between a worker's heartbeats
HEARTBEAT_TTL = 30                 # seconds a silent worker stays listed


@dataclass
class WorkerConfig:
    broker: str
    state: str
    host: str = field(default_factory=socket.gethostname)
    concurrency: int = 2
    queues: tuple[str, ...] = (keys.DEFAULT_QUEUE,)
    lease_ms: int = 10000
    heartbeat_ms: int = 15000          # Dramatiq's dead-worker detection
    idle_poll_ms: int = 50             # longest idle back-off of the consumer


class Reporter:
    """Sends one attempt's reports in order, off the run's thread.

    `send` only queues: the run (its output callback, its handlers) never
    waits for Redis. A sender thread writes whatever has queued up in one
    pipeline (one round trip for a burst of output chunks), retrying while
    Redis is unreachable. `flush` waits until everything queued is on the
    stream: the final report must be there before the lease is given up."""

    def __init__(self, redis: Any, job: Job, host: str) -> None:
        self.redis, self.job, self.host = redis, job, host
        self.spent_ms = 0.0          # the run's wait for Redis (the bench's figure)
        self._pending: list[dict[str, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._sender, daemon=True,
                                        name=f"reports-{job.run_id}")
        self._thread.start()

    def send(self, type_: str, data: dict[str, Any]) -> None:
        rep = Report(run_id=self.job.run_id, attempt=self.job.attempt, host=self.host,
                     type=type_, data=data, at=time.time())  # type: ignore[arg-type]
        with self._cond:
            self._pending.append(rep.encode())
            self._cond.notify_all()

    def flush(self) -> None:
        """Everything queued is on the stream when this returns. What the sender
        has not picked up yet is written here, in the caller's thread: a hand-off
        to another thread costs a scheduling delay on a busy machine."""
        t0 = time.perf_counter()
        with self._cond:
            while self._busy:
                self._cond.wait(1.0)
            batch, self._pending = self._pending, []
            self._busy = bool(batch)
        if batch:
            self._write(batch)
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        self.spent_ms += (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)

    def _sender(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._busy = True
            self._write(batch)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _write(self, batch: list[dict[str, str]]) -> None:
        deadline = time.monotonic() + REPORT_RETRY
        delay = 0.05
        while True:
            try:
                pipe = self.redis.pipeline(transaction=False)
                for fields in batch:
                    pipe.xadd(keys.REPORTS, fields)
                pipe.execute()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("run %s: %d report(s) lost: %s", self.job.run_id, len(batch), exc)
                    return
                time.sleep(delay)
                delay = min(1.0, delay * 2)


class _JobBus:
    """What Runs.execute publishes to: the Redis stream. The started event also
    says how long the message took from the server's enqueue to this worker
    (`dispatch_ms`, the figure `sandbox bench --workers` reports)."""

    def __init__(self, reporter: Reporter, received: float) -> None:
        self.reporter = reporter
        self.dispatch_ms = max(0.0, (received - reporter.job.dispatched_at) * 1000)

    def publish(self, run_id: str, type_: str, data: dict[str, Any],
                persist: bool = True) -> None:
        if type_ == "started" and self.reporter.job.dispatched_at:
            data = {**data, "dispatch_ms": round(self.dispatch_ms, 3)}
        self.reporter.send(type_, data)

    def forget(self, run_id: str) -> None:
        pass


class _JobStore:
    """What Runs.execute reads and writes of a store, for one job."""

    def __init__(self, job: Job, reporter: Reporter, output_dir: str, audit_dir: str) -> None:
        self.job, self.reporter, self.output_dir = job, reporter, output_dir
        self.audit_dir = audit_dir

    def token(self, token_id: str) -> Any:
        """The token as the Job gives it. A worker cannot read the store, so this
        never says revoked: revocation reaches a worker as the run's cancel key
        (sandbox.service.revocation), read before the run starts and while it runs."""
        from sandbox.service.store import TokenRow
        j = self.job
        return TokenRow(id=j.token_id, name=j.token_name, hash="", ceiling=j.ceiling,
                        max_concurrent=1, max_queued=0, rate=None, admin=j.admin,
                        created_at=0.0, revoked_at=None)

    def finish(self, run_id: str, attempt: int | None, status: str, reason: str | None,
               result: dict[str, Any] | None, finished_at: float) -> bool:
        shipped = ship_outputs(self.output_dir, self.reporter)
        if isinstance(result, dict) and isinstance(result.get("run_id"), str):
            ship_audit(self.audit_dir, result["run_id"], self.reporter)
        # the server keeps the record; this host's copies (the run's, its nested
        # runs') would stay for ever: no retention runs on a worker
        from sandbox.service.retention import remove_audit
        remove_audit(self.audit_dir, result)
        r = self.reporter     # one ordered queue: the result follows every event and chunk
        self.reporter.send("finish", {"status": status, "reason": reason, "result": result,
                                      "finished_at": finished_at, "outputs": shipped,
                                      "broker_ms": {"server": round(r.job.claim_ms, 3),
                                                    "worker": round(r.spent_ms, 3)}})
        return True


def ship_outputs(root: str, reporter: Reporter) -> dict[str, int]:
    """Send every regular file under `root` (no link followed): its data, never its
    holes, and a second name of a file as a link to the first. What travels is what
    the run wrote, at most MAX_SHIPPED bytes of it: a run whose output held 4 KiB (one
    byte, a 63 MiB hole, 63 hard links) sent 336 MiB through Redis, and the server
    wrote 252 MiB of zeros."""
    files = sent = skipped = 0
    if not os.path.isdir(root):
        return {"files": 0, "bytes": 0, "skipped": 0}
    first: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            why = _unshippable(rel)
            if why is not None:
                # the server would refuse it; said here, the tenant learns which and why
                if skipped < MAX_REFUSED_EVENTS:
                    reporter.send("refused", {"what": "output file", "reason": why,
                                              "path": _shown(rel)})
                skipped += 1
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                skipped += 1     # a symlink, a fifo that went away, ...
                continue
            try:
                st = os.fstat(fd)
                key = (st.st_dev, st.st_ino)
                if stat.S_ISREG(st.st_mode) and key in first:
                    reporter.send("file", {"path": rel, "link": first[key], "offset": 0,
                                           "last": True, "b64": ""})
                    files += 1
                    continue
                held = min(st.st_size, st.st_blocks * 512)
                if not stat.S_ISREG(st.st_mode) or sent + held > MAX_SHIPPED:
                    skipped += 1
                    continue
                sent += _ship_data(fd, st.st_size, reporter, MAX_SHIPPED - sent,
                                   {"path": rel, "executable": bool(st.st_mode & 0o100)})
                files += 1
                if st.st_nlink > 1:
                    first[key] = rel
            finally:
                os.close(fd)
    return {"files": files, "bytes": sent, "skipped": skipped}


def _shown(rel: str) -> str:
    return os.fsencode(rel).decode("utf-8", "replace")[:1024]


def _unshippable(rel: str) -> str | None:
    """Why the server would refuse this output name (None: it may travel): its input
    names' rules, and UTF-8 (a report is JSON; such a name made the run a setup_error)."""
    from sandbox.service.files import check_input_name
    try:
        rel.encode("utf-8")
        check_input_name(rel)
    except UnicodeEncodeError:
        return "a file name must be UTF-8"
    except ValueError as exc:
        return str(exc)
    return None


def _ship_data(fd: int, size: int, reporter: Reporter, budget: int,
               meta: dict[str, Any]) -> int:
    """Send one file's data extents as `file` reports at their offsets (at most
    `budget` bytes), then a last report with its size; the bytes sent."""
    sent, pos = 0, 0
    while pos < size and sent < budget:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break                       # ENXIO: only a hole is left
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        while start < end and sent < budget:
            chunk = os.pread(fd, min(MAX_CHUNK, end - start, budget - sent), start)
            if not chunk:
                break
            reporter.send("file", {**meta, "offset": start, "last": False,
                                   "b64": base64.b64encode(chunk).decode("ascii")})
            reporter.flush()            # at most one chunk held in memory
            start += len(chunk)
            sent += len(chunk)
        pos = end
    reporter.send("file", {**meta, "offset": size, "size": size, "last": True, "b64": ""})
    return sent


def _ship_chunks(fd: int, reporter: Reporter, type_: str, meta: dict[str, Any]) -> int:
    """Send one open file's content as `type_` reports of MAX_CHUNK bytes."""
    offset = 0
    while True:
        chunk = os.read(fd, MAX_CHUNK)
        last = len(chunk) < MAX_CHUNK
        reporter.send(type_, {**meta, "offset": offset, "last": last,
                              "b64": base64.b64encode(chunk).decode("ascii")})
        offset += len(chunk)
        if last:
            return offset
        reporter.flush()    # a big file: at most one chunk held in memory


def ship_audit(audit_dir: str, launcher_run_id: str, reporter: Reporter) -> int:
    """Send the attempt's audit file (one SQLite file per run, closed and in
    rollback-journal mode once the run ended) so the server's audit endpoints
    answer for a run whichever host ran it. Returns the bytes sent."""
    from sandbox.audit.store import max_bytes, run_file
    try:
        fd = os.open(run_file(audit_dir, launcher_run_id),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, ValueError):
        return 0            # not audited (the policy's audit is off), or no store
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes():
            return 0
        return _ship_chunks(fd, reporter, "audit_file", {"run": launcher_run_id})
    finally:
        os.close(fd)


class Worker:
    """The executor behind the Dramatiq actor: one per `sandbox worker` process."""

    def __init__(self, config: WorkerConfig) -> None:
        import redis
        from sandbox.service.config import ServiceConfig, prepare_state
        self.config = config
        self.redis = redis.Redis.from_url(config.broker)
        self.service_config = ServiceConfig(state=prepare_state(config.state),
                                            hostname=config.host)
        self.launcher: Any = None
        self._launcher_lock = threading.Lock()
        self.running = 0                     # attempts in hand (the heartbeat shows it)
        self._changed = threading.Event()    # wakes the heartbeat when `running` changes

    def _get_launcher(self) -> Any:
        with self._launcher_lock:
            if self.launcher is None:
                from sandbox.launcher.launcher import Launcher
                self.launcher = Launcher(max_concurrent=self.config.concurrency,
                                         audit_db=self.service_config.audit_dir,
                                         history=False, capture_output=True)
            return self.launcher

    def handle(self, message: dict[str, Any]) -> None:
        """The actor's body: run one attempt (or do nothing for a redelivery)."""
        from sandbox.service.files import write_input
        from sandbox.service.runs import Runs, decode_b64
        from sandbox.service.store import RunRow
        received = time.time()
        job = Job.model_validate(message)
        cancel = threading.Event()
        lease = Lease(self.redis, job.run_id, job.attempt, self.config.host, job.lease_ms,
                      cancel)
        t_take = time.perf_counter()
        if not lease.take():
            log.info("run %s attempt %d already started elsewhere: dropped", job.run_id,
                     job.attempt)
            return
        with self._launcher_lock:
            self.running += 1
        self._changed.set()
        reporter = Reporter(self.redis, job, self.config.host)
        reporter.spent_ms = (time.perf_counter() - t_take) * 1000
        cfg = self.service_config
        rundir = cfg.run_dir(job.run_id)
        try:
            lease.start()
            shutil.rmtree(rundir, ignore_errors=True)
            os.makedirs(cfg.input_dir(job.run_id), mode=0o700)
            for f in job.files:
                write_input(cfg.input_dir(job.run_id), f.name,
                            decode_b64(f.content_b64, f"files[{f.name}]"), f.executable)
            row = RunRow(seq=0, id=job.run_id, token_id=job.token_id, status="running",
                         kind=job.kind, request=job.request, policy=None, created_at=0.0,
                         started_at=time.time(), finished_at=None, attempts=job.attempt,
                         retries=0, reason=None, result=None, host=self.config.host,
                         idem_key=None, has_secrets=job.has_secrets)
            runs = Runs(cast(Any, _JobStore(job, reporter, cfg.output_dir(job.run_id),
                                            cfg.audit_dir)),
                        cast(Any, _JobBus(reporter, received)), cfg)
            runs.launcher = self._get_launcher()
            if lease.cancelled():
                runs._end(row, job.attempt, "cancelled", "cancelled before it started", None)
                return
            secrets = self._secrets(job)
            if secrets is None:
                runs._end(row, job.attempt, "lost", "its secret environment values waited "
                          f"in Redis for {keys.SECRET_TTL // 3600} h without a worker and "
                          "expired; submit it again", None)
                return
            runs.execute(row, job.attempt, cancel, secrets)
        except Exception as exc:     # report, never leave the server guessing
            log.exception("run %s attempt %d failed in the worker", job.run_id, job.attempt)
            reporter.send("finish", {"status": "setup_error", "result": None,
                                     "reason": f"the worker on {self.config.host} failed: "
                                               f"{exc.__class__.__name__}: {exc}",
                                     "finished_at": time.time()})
            reporter.send("exit", {"status": "setup_error", "reason": "worker failure",
                                   "exit_code": None})
        finally:
            reporter.close()      # the final report is on the stream ...
            if job.has_secrets:   # this attempt ended the run: its secrets go
                try:
                    self.redis.delete(keys.secrets(job.run_id))
                except Exception as exc:     # they expire anyway (keys.SECRET_TTL)
                    log.warning("run %s: secrets not deleted: %s", job.run_id, exc)
            lease.finish()        # ... before the attempt is marked done
            with self._launcher_lock:
                self.running -= 1
            self._changed.set()
            shutil.rmtree(rundir, ignore_errors=True)

    def _secrets(self, job: Job) -> dict[str, str] | None:
        """The run's secret env values (None: they expired), read by the worker that
        won the attempt; a retry after a lost worker reads the same key."""
        if not job.has_secrets:
            return {}
        raw = self.redis.get(keys.secrets(job.run_id))
        if raw is None:
            return None
        got = json.loads(raw)
        return {str(k): str(v) for k, v in got.items()} if isinstance(got, dict) else None

    def close(self) -> None:
        if self.launcher is not None:
            self.launcher.close()

    # -- heartbeat (for people: the workers page; delivery relies on leases) ---
    def beat(self, started_at: float) -> None:
        c = self.config
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.worker(c.host), mapping={
            "host": c.host, "slots": c.concurrency, "running": self.running,
            "queues": ",".join(c.queues), "started_at": started_at, "seen_at": now})
        pipe.expire(keys.worker(c.host), HEARTBEAT_TTL)
        pipe.zadd(keys.WORKERS, {c.host: now})
        pipe.execute()

    def heartbeat_loop(self, stop: threading.Event) -> None:
        started = time.time()
        while not stop.is_set():
            try:
                self.beat(started)
            except Exception:
                pass            # Redis away: the page shows the heartbeat's age
            if stop.wait(0.1):  # at most ten beats a second, off every run's path
                break
            self._changed.wait(HEARTBEAT_EVERY)
            self._changed.clear()
        try:
            self.redis.delete(keys.worker(self.config.host))
        except Exception:
            pass


def serve(config: WorkerConfig) -> int:
    """Consume until SIGTERM or SIGINT; finish the runs in hand, then exit 0."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    w = Worker(config)
    w.redis.ping()      # fail now, with the URL, rather than in a consumer thread
    broker = RedisBroker(url=config.broker, middleware=[],
                         heartbeat_timeout=config.heartbeat_ms,
                         maintenance_chance=100_000)   # 10% of commands: dead workers seen soon
    dramatiq.actor(w.handle, broker=broker, actor_name=keys.ACTOR,  # type: ignore[call-overload]
                   queue_name=config.queues[0])   # no Retries middleware: the server re-queues
    for q in config.queues:
        broker.declare_queue(q)
    consumer = dramatiq.Worker(broker, queues=set(config.queues),
                               worker_threads=config.concurrency,
                               worker_timeout=config.idle_poll_ms)
    consumer.queue_prefetch = config.concurrency   # no hoarding: other hosts get work
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer.start()
    beat = threading.Thread(target=w.heartbeat_loop, args=(stop,), daemon=True,
                            name="heartbeat")
    beat.start()
    log.warning("sandbox worker %s: consuming %s from %s with %d slot(s)", config.host,
                ",".join(config.queues), config.broker, config.concurrency)
    try:
        stop.wait()
    finally:
        consumer.stop(timeout=600_000)
        w.close()
    return 0
