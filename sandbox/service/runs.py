"""Submitting a run (validate, check the policy, persist, queue) and executing one.

A submitted run gets fresh directories under <state>/runs/<id>/: `input`
(its ${WORKDIR}: the uploaded files, read-only to it) and `output` (its
${OUTPUT}); HOME is the launcher's /tmp/home, in the run's private /tmp. The request
is stored without `secret_env`; secret values live in memory only until the
run starts, and are masked out of everything recorded about the run. Its
stdin is a file, <state>/runs/<id>/stdin, read only by the executor: kept in
the stored request, 64 MB of it was read back by every listing.
"""
from __future__ import annotations

import base64
import binascii
import os
import secrets as _secrets
import shutil
import threading
import time
from typing import Any, Callable, Sequence

from sandbox.errors import InputError
from sandbox.launcher.slots import BorrowOnly
from sandbox.service.config import ServiceConfig
from sandbox.service.events import Bus
from sandbox.service.files import write_input
from sandbox.service.models import FINAL_STATES, Links, RunRequest, RunView
from sandbox.service.revocation import REVOKED
from sandbox.service.store import RunRow, Store, TokenRow
from sandbox.service.streams import MessageBudget, OutputStream, Secrets, mask, message_event
from sandbox.service import tenancy

MAX_DENIED_EVENTS = 1000


class QuotaExceeded(Exception):
    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def new_run_id() -> str:
    return "run_" + _secrets.token_hex(12)


def decode_b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InputError(f"{what}: not valid base64") from None


def read_stdin(text: Any, b64: Any) -> bytes | None:
    """A request's stdin as bytes (`stdin` text or `stdin_b64`), None without one."""
    if text is not None:
        return str(text).encode()
    if b64 is not None:
        return decode_b64(str(b64), "stdin_b64")
    return None


def write_private(path: str, data: bytes) -> None:
    """A new file of the service's own (0600, never through a link)."""
    from sandbox.service.files import write_all
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def links(run_id: str) -> Links:
    base = f"/v1/runs/{run_id}"
    return Links(self=base, events=f"{base}/events", files=f"{base}/files",
                 cancel=f"{base}/cancel", audit=f"{base}/audit")


def view(row: RunRow, token_name: str) -> RunView:
    req = row.request
    wf = req.get("workflow")
    return RunView(id=row.id, status=row.status, kind=row.kind,  # type: ignore[arg-type]
                   token=token_name, policy=row.policy, argv=req.get("argv"),
                   workflow=str(wf.get("name", "workflow")) if isinstance(wf, dict) else None,
                   labels=req.get("labels") or {}, created_at=row.created_at,
                   queued_at=row.created_at, started_at=row.started_at,
                   finished_at=row.finished_at, host=row.host, attempts=row.attempts,
                   retries=row.retries, reason=row.reason, result=row.result,
                   links=links(row.id))


class Runs:
    """Submission and execution of runs (the API and the queue's executor)."""

    def __init__(self, store: Store, bus: Bus, config: ServiceConfig) -> None:
        self.store, self.bus, self.config = store, bus, config
        self.launcher: Any = None      # set by the app: sandbox.Launcher
        # who lets a run's nested spawns take a free launcher slot (launcher.slots.Gate),
        # by token id: the in-process queue counts them against the token's concurrency;
        # by default none may (a tree then runs in its root's slot, one at a time)
        self.nested_gate: Callable[[str], Any] = lambda _token_id: BorrowOnly()
        self.metrics: Any = None       # sandbox.service.metrics.Metrics
        self._lock = threading.Lock()

    # -- submit ---------------------------------------------------------------
    def policy_for(self, req: RunRequest, token: TokenRow, run_id: str) -> tuple[Any, str]:
        """(the resolved policy, the name the run is recorded under) for this request;
        Forbidden over the ceiling. An inline policy's name is the tenant's to choose,
        so it is recorded as "inline:NAME": recorded as "default", an admin's re-run
        from the web page ran the tenant's program under the real `default`."""
        from sandbox.policy.loader import load_policy_cached
        held_to = tenancy.ceiling_name(token)
        policy = tenancy.load_requested(req.policy, req.policy_inline,
                                        held_to or self.config.default_policy)
        ceiling = load_policy_cached(held_to) if held_to else None
        tenancy.check(policy, ceiling, state=self.config.state,
                      workdir=self.config.input_dir(run_id),
                      output=self.config.output_dir(run_id))
        return policy, (policy.name if req.policy_inline is None else f"inline:{policy.name}")

    def check_quota(self, token: TokenRow) -> None:
        if self.store.count("queued") >= self.config.max_queued:
            raise QuotaExceeded(f"the server's queue is full ({self.config.max_queued} runs)")
        if not token.admin and self.store.count("queued", token.id) >= token.max_queued:
            raise QuotaExceeded(f"token {token.name!r} has {token.max_queued} runs queued, "
                                "its limit")

    def submit(self, req: RunRequest, token: TokenRow, idem_key: str | None,
               uploads: Sequence[tuple[str, bytes, bool]] = (),
               hold_secrets: Callable[[str, dict[str, str] | None], None] | None = None
               ) -> tuple[RunRow, bool]:
        """Persist a new run (or return the one this idempotency key made);
        (row, created). `hold_secrets` (the queue's) gets the secret values before
        the run is in the store, where an executor may claim it at once, and None
        when no run was made after all. Raises InputError, Forbidden, QuotaExceeded."""
        hold = hold_secrets or (lambda _run_id, _secrets: None)
        if idem_key is not None:
            old = self.store.run_by_idem(token.id, idem_key)
            if old is not None:
                return old, False
        run_id = new_run_id()
        _, policy_name = self.policy_for(req, token, run_id)
        files: list[tuple[str, bytes, bool]] = list(uploads)
        for f in req.files:
            files.append((f.name, decode_b64(f.content_b64, f"files[{f.name}]"), f.mode == "rx"))
        stdin = read_stdin(req.stdin, req.stdin_b64)
        for name, data, _ in files:
            if len(data) > self.config.max_file:
                raise InputError(f"files[{name}]: {len(data)} bytes, over the "
                                 f"{self.config.max_file}-byte limit per file")
        if len({n for n, _, _ in files}) != len(files):
            raise InputError("files: a name is given twice")
        with self._lock:   # quota check and insert together: no overshoot under load
            self.check_quota(token)
            rundir = self.config.run_dir(run_id)
            os.mkdir(rundir, 0o700)
            try:
                inp = self.config.input_dir(run_id)
                os.mkdir(inp, 0o700)
                for name, data, executable in files:
                    write_input(inp, name, data, executable)
                if stdin is not None:
                    write_private(self.config.stdin_file(run_id), stdin)
                stored = req.model_dump(exclude={"secret_env", "files", "stdin", "stdin_b64"})
                stored["files"] = [n for n, _, _ in files]
                stored["stdin_bytes"] = None if stdin is None else len(stdin)
                stored["secret_names"] = sorted(req.secret_env)
                hold(run_id, req.secret_env)
                row = RunRow(seq=0, id=run_id, token_id=token.id, status="queued",
                             kind="exec" if req.argv is not None else "workflow",
                             request=stored, policy=policy_name, created_at=time.time(),
                             started_at=None, finished_at=None, attempts=0,
                             retries=req.retries, reason=None, result=None,
                             host=self.config.hostname, idem_key=idem_key,
                             has_secrets=bool(req.secret_env))
                got = self.store.insert_run(row)
            except BaseException:
                hold(run_id, None)
                shutil.rmtree(rundir, ignore_errors=True)
                raise
            if got.id != run_id:     # the same key won a race meanwhile
                hold(run_id, None)
                shutil.rmtree(rundir, ignore_errors=True)
                return got, False
        self.bus.publish(run_id, "queued", {"status": "queued"})
        if self.metrics is not None:
            self.metrics.submitted.inc()
        return got, True

    # -- execute (a queue worker's thread) -------------------------------------
    def execute(self, row: RunRow, attempt: int, cancel: threading.Event,
                secret_env: dict[str, str]) -> None:
        from sandbox.nested import Lineage
        from sandbox.policy.confine import Ceiling
        from sandbox.policy.loader import load_policy_cached
        req = row.request
        if row.has_secrets and not secret_env:
            self._end(row, attempt, "lost", "its secret environment values are kept in memory "
                      "only and did not survive a restart of the server; submit it again", None)
            return
        token = self.store.token(row.token_id)
        if token is None or token.revoked_at is not None:   # revocation.py's rule
            self._end(row, attempt, "cancelled", REVOKED, None)
            return
        self.bus.publish(row.id, "started", {"status": "running", "attempt": attempt})
        secrets = Secrets(secret_env.values())     # one pattern for the whole run
        try:
            held_to = tenancy.ceiling_name(token)
            policy = tenancy.load_requested(req.get("policy"), req.get("policy_inline"),
                                            held_to or self.config.default_policy)
            ceiling = load_policy_cached(held_to) if held_to else None
            inp, out = self.config.input_dir(row.id), self.config.output_dir(row.id)
            tenancy.check(policy, ceiling, state=self.config.state, workdir=inp, output=out)
            shutil.rmtree(out, ignore_errors=True)    # a re-queued run starts afresh
            stdin = self.stdin_of(row)
            # HOME stays the launcher's: /tmp/home in the run's private /tmp, empty
            env = {**(req.get("env") or {}), **secret_env}
            target: Any = req["argv"] if row.kind == "exec" else req["workflow"]
            lineage = Lineage(ceiling=Ceiling(ceiling, what="the token's ceiling")
                              if ceiling is not None else None,
                              gate=self.nested_gate(row.token_id))
            def publish(type_: str, data: dict[str, Any]) -> None:
                self.bus.publish(row.id, type_, data)
            output = OutputStream(publish, secrets)

            messages = MessageBudget(publish)

            def on_message(msg: Any, _info: Any) -> None:
                ev = message_event(msg.type, msg.payload, secrets)
                if ev is not None:
                    messages(*ev)
            try:
                result = self.launcher.spawn(
                    target, policy=policy, store=req.get("store"), timeout=req.get("timeout"),
                    workdir=inp, output_dir=out, env=env, capture_output=True, cancel=cancel,
                    stdin=stdin, lineage=lineage, on_output=output.feed,
                    handlers={"*": on_message},
                    # a workflow's action modules may be uploaded with it
                    code_paths=[inp] if row.kind == "workflow" else ())
            finally:
                output.close()
        except (InputError, tenancy.Forbidden) as exc:
            self._end(row, attempt, "setup_error", mask(str(exc), secrets), None)
            return
        data = mask(result.to_dict(), secrets)
        if secrets:     # the last moment the values are known (audit_mask.py)
            from sandbox.service.audit_mask import mask_run
            mask_run(self.config.audit_dir, {"run_id": result.run_id, "nested": result.nested},
                     list(secret_env.values()))
        for record in (data.get("denied") or [])[:MAX_DENIED_EVENTS]:
            self.bus.publish(row.id, "denied", {"record": record})
        self._end(row, attempt, str(result.status), data.get("reason") or None, data)

    def stdin_of(self, row: RunRow) -> bytes | None:
        """The run's stdin: its file (written at submit), else what the request holds
        (a store of an older version, or a scale-out worker's job)."""
        if row.request.get("stdin_bytes") is not None:
            with open(self.config.stdin_file(row.id), "rb") as f:
                return f.read()
        req = row.request
        return read_stdin(req.get("stdin"), req.get("stdin_b64"))

    def _end(self, row: RunRow, attempt: int, status: str, reason: str | None,
             result: dict[str, Any] | None) -> None:
        assert status in FINAL_STATES, status
        now = time.time()
        if self.store.finish(row.id, attempt, status, reason, result, now):
            if self.metrics is not None:
                started = self.store.run_head(row.id)    # not its result, just written
                self.metrics.ended(status, now - started.started_at if started is not None
                                   and started.started_at else None, result)
            self.bus.publish(row.id, "exit", {"status": status, "reason": reason,
                                              "exit_code": (result or {}).get("exit_code")})
