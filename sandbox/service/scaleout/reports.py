"""The server's side of the report stream: what workers send becomes the store's
record and the run's events.

One consumer group on one stream: an entry is acknowledged (and deleted) only
after it was applied, so a server killed mid-way applies it again on restart.
Every report is fenced: it changes a run only while the run's current attempt
is the report's (a re-queued or lost run ignores its old worker). Output file
names are checked again here (`files.write_input`: relative, no `..`, no
link followed); content arrives in chunks and is written when the last one
does.

A report that cannot be applied is refused: acknowledged like any other, and
said to the run's readers as a `refused` event. Only an outage of the
server's own stores (Redis, SQLite, its disk) leaves an entry unacknowledged
to be read again: a report that raised anything else was retried twice a
second for ever (across restarts too), and no other run's report was applied
meanwhile (one output file 17 directories deep stopped scale-out for every
tenant).
"""
from __future__ import annotations

import base64
import errno
import logging
import os
import sqlite3
import threading
import time
from typing import Any

from pydantic import ValidationError

from sandbox.errors import InputError
from sandbox.service.events import Bus
from sandbox.service.scaleout import keys
from sandbox.service.scaleout.messages import Report
from sandbox.service.store import Store

log = logging.getLogger("sandbox.service")

MAX_PENDING_FILE = 64 * 1024 * 1024     # bytes of one output file held while it arrives
MAX_APPARENT = 1 << 40                   # the length an output file may claim (holes)
MAX_REASON = 500                         # characters of a refusal's reason in its event
# errors of this server's own disk: the next try may succeed, the report is not at fault
OUTAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE,
                           errno.ENFILE, errno.ENOMEM})


def is_outage(exc: BaseException) -> bool:
    """An error of the server's own stores (retried), not of the report (refused)."""
    import redis.exceptions
    if isinstance(exc, (redis.exceptions.RedisError, sqlite3.OperationalError, MemoryError)):
        return True
    return isinstance(exc, OSError) and exc.errno in OUTAGE_ERRNOS


class ReportApplier:
    def __init__(self, redis: Any, store: Store, bus: Bus, output_dir: Any,
                 consumer: str, audit_dir: str) -> None:
        self.redis, self.store, self.bus = redis, store, bus
        self.output_dir = output_dir          # run id -> its output directory
        self.audit_dir = audit_dir            # the server's audit store
        self.consumer = consumer
        self._files: dict[tuple[str, int, str], bytearray] = {}
        self._extents: dict[tuple[str, int, str], list[tuple[int, bytes]]] = {}
        self._finished: set[tuple[str, int]] = set()   # finishes this server applied
        self.metrics: Any = None                        # sandbox.service.metrics.Metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.redis.xgroup_create(keys.REPORTS, keys.GROUP, id="0", mkstream=True)
        except Exception as exc:          # BUSYGROUP: it exists
            if "BUSYGROUP" not in str(exc):
                raise
        self._thread = threading.Thread(target=self._loop, daemon=True, name="reports")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        pending = True            # first what this consumer read but never acknowledged
        while not self._stop.is_set():
            try:
                got = self.redis.xreadgroup(keys.GROUP, self.consumer,
                                            {keys.REPORTS: "0" if pending else ">"},
                                            count=200, block=None if pending else 500)
                entries = got[0][1] if got else []
                if pending and not entries:
                    pending = False
                    continue
                for entry_id, fields in entries:
                    self._apply_entry(fields)
                    pipe = self.redis.pipeline(transaction=False)
                    pipe.xack(keys.REPORTS, keys.GROUP, entry_id)
                    pipe.xdel(keys.REPORTS, entry_id)
                    pipe.execute()
            except Exception as exc:       # Redis away: try again; nothing was acknowledged
                if not self._stop.is_set():
                    log.warning("report stream: %s; retrying", exc)
                    pending = True
                    self._stop.wait(0.5)

    def _apply_entry(self, fields: dict[bytes, bytes]) -> None:
        try:
            rep = Report.decode(fields)
        except (KeyError, ValidationError, ValueError) as exc:
            log.warning("a malformed report was dropped: %s", exc)
            return
        try:
            self.apply(rep)
        except Exception as exc:
            if is_outage(exc):
                raise                     # not acknowledged: read again after a pause
            self._refuse(rep, exc)

    def _refuse(self, rep: Report, exc: Exception) -> None:
        """Drop what a refused report began, and say so in its run's events (only
        for the run's current attempt: a stale or unknown one changes nothing)."""
        path = str(rep.data.get("path", ""))[:1024] if rep.type == "file" else None
        if path is not None:
            self._extents.pop((rep.run_id, rep.attempt, path), None)
        elif rep.type == "audit_file":
            self._files.pop((rep.run_id, rep.attempt, f"audit:{rep.data.get('run', '')}"), None)
        why = exc if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        reason = str(why)[:MAX_REASON]
        log.warning("run %s: a %s report was refused: %s", rep.run_id, rep.type, reason)
        head = self.store.run_head(rep.run_id)
        if head is None or head.attempts != rep.attempt:
            return
        data: dict[str, Any] = {"what": f"{rep.type} report", "reason": reason}
        if path is not None:
            data.update(what="output file", path=path)
        self.bus.publish(rep.run_id, "refused", data)

    def apply(self, rep: Report) -> None:
        row = self.store.run_head(rep.run_id)     # never the request nor the result
        if row is None or row.attempts != rep.attempt:
            return                        # deleted, or an attempt that is no longer current
        if rep.type == "started":
            self.store.mark_started(rep.run_id, rep.attempt, rep.host, rep.at)
            self.bus.publish(rep.run_id, "started", {**rep.data, "host": rep.host})
        elif rep.type == "file":
            self._file(rep)
        elif rep.type == "audit_file":
            self._audit_file(rep)
        elif rep.type == "finish":
            d = rep.data
            result = d.get("result")
            if isinstance(result, dict):
                result = {**result, "host": rep.host, "attempt": rep.attempt,
                          "dispatch": d.get("broker_ms")}
            if self.store.finish(rep.run_id, rep.attempt, str(d.get("status")),
                                 d.get("reason"), result,
                                 float(d.get("finished_at") or rep.at)):
                self._finished.add((rep.run_id, rep.attempt))
                if self.metrics is not None:
                    ended = float(d.get("finished_at") or rep.at)
                    self.metrics.ended(str(d.get("status")), ended - row.started_at
                                       if row.started_at else None, result)
        else:
            if rep.type == "exit":
                # the exit of the finish applied above (or, after a restart, of a run
                # that ended with this attempt and was not declared lost meanwhile)
                if (rep.run_id, rep.attempt) in self._finished or row.status not in (
                        "running", "queued", "lost"):
                    self._finished.discard((rep.run_id, rep.attempt))
                    self.bus.publish(rep.run_id, "exit", rep.data)
                    self.bus.forget(rep.run_id)
            elif row.status == "running":
                self.bus.publish(rep.run_id, rep.type, rep.data)

    def _chunk(self, rep: Report, name: str) -> bytes | None:
        """Add a chunk of `name`; its whole content once the last chunk arrived."""
        d = rep.data
        key = (rep.run_id, rep.attempt, name)
        buf = self._files.setdefault(key, bytearray())
        if int(d.get("offset", -1)) != len(buf):
            self._files.pop(key, None)
            raise InputError(f"{name!r}: chunk out of order")
        buf += base64.b64decode(str(d.get("b64", "")))
        if len(buf) > MAX_PENDING_FILE:
            self._files.pop(key, None)
            raise InputError(f"{name!r}: over {MAX_PENDING_FILE} bytes")
        if not d.get("last"):
            return None
        return bytes(self._files.pop(key))

    def _audit_file(self, rep: Report) -> None:
        """The run's audit file, as its worker's store wrote it, into this server's
        store under the launcher's run id (checked like every run id there);
        an existing file is kept (a report applied twice after a restart)."""
        from sandbox.audit.store import ensure_dir, run_file
        from sandbox.service.files import write_all
        rid = str(rep.data.get("run", ""))
        try:
            path = run_file(self.audit_dir, rid)
        except ValueError:
            raise InputError(f"audit file of {rep.run_id}: not a run id: {rid!r}") from None
        data = self._chunk(rep, "audit:" + rid)
        if data is None:
            return
        ensure_dir(self.audit_dir)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

    def _file(self, rep: Report) -> None:
        """One output file: its data extents at their offsets (holes stay holes), kept
        until its last report; or (`link`) another name of a file already written."""
        from sandbox.service.files import check_input_name, link_input, write_extents
        d = rep.data
        path = str(d.get("path", ""))
        out = self.output_dir(rep.run_id)
        if "link" in d:
            os.makedirs(out, mode=0o700, exist_ok=True)
            try:
                link_input(out, path, str(d.get("link", "")))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path!r}: not a link to a file shipped before: {exc}") \
                    from None
            return
        check_input_name(path)      # at its first chunk: nothing kept for a name refused
        key = (rep.run_id, rep.attempt, path)
        parts = self._extents.setdefault(key, [])
        offset = int(d.get("offset", -1))
        end = parts[-1][0] + len(parts[-1][1]) if parts else 0
        if offset < end:
            self._extents.pop(key, None)
            raise InputError(f"{path!r}: chunk out of order")
        if not d.get("last"):
            parts.append((offset, base64.b64decode(str(d.get("b64", "")))))
            if sum(len(p[1]) for p in parts) > MAX_PENDING_FILE:
                self._extents.pop(key, None)
                raise InputError(f"{path!r}: over {MAX_PENDING_FILE} bytes")
            return
        self._extents.pop(key, None)
        size = int(d.get("size", end))
        if size < end or size > MAX_APPARENT:
            raise InputError(f"{path!r}: a size of {size} bytes")
        os.makedirs(out, mode=0o700, exist_ok=True)
        write_extents(out, path, parts, size, bool(d.get("executable")))
