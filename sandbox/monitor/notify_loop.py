"""The monitor's seccomp notification loop: file audit records and violations.

`start(fd, supervisor)` is called by the Supervisor when the sandboxee hands
over its listener; it returns an `AuditLoop` whose `finish()` (called after
the sandbox is gone) returns ``{"audit": summary, "denied": [...]}`` for the
exit report.

The process's one notification thread (sandbox/monitor/notify_hub.py) waits on
every attached run's listener with epoll and calls `dispatch()` of the run
whose listener is ready, once per notification; the Supervisor's select loop
is untouched, and 50 runs in one process cost one thread, not 50. A call its
broker performs is a generator the hub resumes when the broker answers, so a
broker that blocks holds its own run only.
For each notification:

0. A memfd_create without MFD_NOEXEC_SEAL: made here with it and installed in
   the caller (monitor/memfd_seal.py), so no memfd of a sandbox can be run.
1. Not an audited syscall (or one the policy denies, with on_violation =
   "kill"): a violation -> EPERM, `supervisor.on_violation`, which kills.
2. Read the path argument(s) from the caller's memory, make them absolute
   (cwd or dirfd), canonical inside the sandbox's root, and ask the engine.
3. Record (seq, time, pid, operation, syscall, path, flags, verdict, rule)
   into the writer's deque (SQLite in batches, another thread).
4. Answer. CONTINUE: the kernel layers (mount view + Landlock, compiled from
   the same policy) decide; the record is advisory, because the path we read
   may be changed by another thread before the kernel reads it
   (seccomp_unotify(2) NOTES). Never is anything allowed *because* of it.
   Exceptions, both safe against that race:
   - a verdict from a ``filesystem.deny`` rule is answered EACCES by the
     monitor (a deny rule may name paths the layers could not hide);
   - an access(X_OK) of an executable regular file in the view where the
     policy refuses exec (a noexec area: strict's private /tmp) is answered
     "yes" (`notify_args.refused_exec`): the kernel's EACCES made bash and `command -v`
     skip it silently down PATH (an activated venv ran the system's pip); now
     the program execs it and the kernel refuses that loudly (EACCES, 126),
     recorded, with a hint. Only an answer changes, nothing is done for the
     caller, so the race is harmless;
   - when the policy has such deny rules inside writable trees ("guarded"
     trees, `sandbox.audit.verdicts.guarded_prefixes`), every open and every
     name-changing call is *performed for the sandbox* on the path it read
     (its own copy, resolved race-free with openat2 in the sandbox's root)
     and the result injected (SECCOMP_IOCTL_NOTIF_ADDFD) — see broker.py.
     The monitor only copies the arguments: the call is performed by a
     broker process with the sandbox's credentials, namespaces and Landlock
     domain and no capabilities (broker_process.py).

Beside it: the dispatch tables every run of one syscall policy shares
(notify_dispatch.py), what is read of a call beyond its path (notify_args.py) and
the run's store file (notify_store.py).

SYNC_WAKE_UP is set on the listener (by value) so the round trip stays on one
CPU. Nothing is logged per call; failures are counted in the summary.

Repeats (issue 15.3): when a call's answer was a plain CONTINUE whose record
rests only on (syscall, flags, absolute path) and the resolver's directory
cache, the key goes to the run's compiled loop (monitor/notify_fast.py), which
answers the next calls with that key without the interpreter (re-reading the
path and re-checking a followed final name each time) and hands back compact
records that `_replay` turns into the very records made here. Its cache is
cleared whenever the resolver's is (a rename, link or unlink in the sandbox).
"""
from __future__ import annotations

import errno
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Generator, Protocol

from sandbox.audit.tally import Tally
from sandbox.printable import json_text
from sandbox.latch import Latch
from sandbox.audit.verdicts import AuditEngine, guarded_prefixes

if TYPE_CHECKING:
    from sandbox.audit.writer import Writer
    from sandbox.monitor.notify_hub import Hub
from sandbox.isolation import seccomp
from sandbox.isolation import syscall_profiles as sp
from sandbox.monitor import audit_syscalls as S
from sandbox.monitor import cost
from sandbox.monitor import fast_keys, memfd_seal, notify_dispatch, notify_fast, root_walk
from sandbox.monitor import notify_args as A
from sandbox.monitor import notify_store
from sandbox.monitor.audit_paths import PathError, Paths
from sandbox.monitor.seccomp_notify import AUDIT_ARCH_X86_64, Listener, Notification
from sandbox import protocol
from sandbox.isolation.context import ContainContext
from sandbox.protocol import AuditSummary, Denied, Spec, Violation

_intern = sys.intern

_EACCES = errno.EACCES
MAX_DENIED_NAMES = 16   # syscall names counted in errno mode (RunResult.denied_syscalls)


class RunSide(Protocol):
    """What the loop reads of its run's Supervisor (sandbox.monitor.supervisor), and the
    two calls it makes back (tests/notify_hub_harness.py's stand-in has just these)."""
    spec: Spec
    ctx: ContainContext
    pid1: int | None

    def on_violation(self, violation: Violation) -> None: ...

    def on_monitor_budget(self) -> None: ...


class AuditLoop:
    """Built in two steps so the costly part overlaps the sandbox's own set-up:
    the monitor constructs it right after forking the stub (policy engine,
    syscall tables, broker), while the stub and PID 1 build the namespaces and
    layers on the other core; `attach` takes the listener when it arrives and
    hands it to the process's hub."""

    # slotted: one per live run in the monitor host, ~1.5 KiB less than a dict of
    # its attributes (issue 14: the host's growth per live run)
    __slots__ = (
        "_detached", "_fast", "_hub", "_init_exec_seen", "_keys", "_rec_lock", "_spec",
        "_stop", "_store_file", "audit", "broker", "broker_rusage", "budget", "cpu", "ctx",
        "db_error", "db_path", "denied_syscalls", "engine", "fast_answered", "files",
        "guarded_nrs", "hub_done", "kill_mode", "lingers", "listener", "net_audit",
        "net_nrs", "net_summary", "over_budget", "paths", "proxy_cpu", "record_all",
        "run_id", "seq", "specs", "sup", "sync_wakeup", "table", "tally", "writer",
    )

    def __init__(self, supervisor: RunSide) -> None:
        self.sup = supervisor
        spec, ctx = supervisor.spec, supervisor.ctx
        self.ctx = ctx          # the broker process applies the sandbox's Landlock from it
        policy = ctx.policy
        self.run_id: str = spec.run_id
        self.files: str = ctx.audit_files
        self.audit = self.files != "none"
        # mode = "allowlist": every connection through the monitor's proxy is a record
        # (sandbox/netproxy), whatever audit.files says
        self.net_audit = policy.network.mode == "allowlist"
        self.net_summary: dict[str, Any] | None = None
        self._rec_lock = threading.Lock()   # the proxy's threads record too
        self.record_all = self.files == "all"
        self.listener: Listener | None = None
        self.sync_wakeup = False
        # shared by every run of the same syscall policy, audit level and network mode
        self.table, self.specs, self.guarded_nrs, self.net_nrs = notify_dispatch.for_policy(
            policy.syscalls, self.files, policy.network.mode)
        self.kill_mode = policy.syscalls.on_violation == "kill"
        self.denied_syscalls: dict[str, int] = {}   # errno mode: refusals by name
        self.tally = Tally(self.files)
        self.paths = Paths()
        self.seq = 0
        self.writer: Writer | None = None
        self.db_path: str | None = None
        self.db_error: str | None = None
        self.engine: AuditEngine | None = None
        self.broker = None
        guarded: tuple[str, ...] = ()
        if self.audit:
            self.engine = AuditEngine(policy, ctx.fs_plan)
            guarded = guarded_prefixes(policy, ctx.fs_plan)
        # connects and addressed sends with a private network (issue 10.6): brokered
        if guarded or self.net_nrs:
            from sandbox.monitor.broker import Broker
            self.broker = Broker(self, guarded)
        self._spec: Spec | None = spec
        self.budget = policy.limits.monitor_cpu     # the trusted side's CPU (issue 11.7)
        self.over_budget = False
        self.broker_rusage = None
        self._init_exec_seen = False   # PID 1 starting sandbox-init (see _is_init_exec)
        self._stop = False
        self._detached = False   # set by `finish`: the hub let go of the run (`release`)
        self._store_file: Any = None   # `_summary` leaves it for `release`
        self.cpu = 0.0                 # the hub's thread CPU spent on this run (notify_hub)
        self.proxy_cpu = 0.0           # its allowlist proxy's threads, set when they stop
        self.hub_done: Latch | None = None   # set by the hub once it forgot us
        self._hub: Hub | None = None
        self._fast: Any = None         # the compiled fast path (notify_fast), once attached
        self.lingers = False           # the hub lets `dispatch` wait on its epoll descriptor
        self.fast_answered = 0         # calls the compiled loop answered
        self._keys: fast_keys.Keys | None = None   # what Python puts in it (fast_keys)

    def attach(self, fd: int, hub: "Hub | None" = None) -> "AuditLoop":
        """Take the listener descriptor; open the store; hand the listener to the hub
        (the process's, unless one is given)."""
        from sandbox.monitor import notify_hub
        self.listener = Listener(fd)
        self.sync_wakeup = True
        try:
            self.listener.set_sync_wakeup()
        except OSError:
            self.sync_wakeup = False
        if self.audit or self.net_audit:
            assert self._spec is not None, "attach() once"
            self.writer, self.db_path = notify_store.open_writer(
                self.run_id, self.files, self._spec, self.sup.ctx.policy)
        if self.audit:
            self._start_fast(fd)
        self._spec = None   # what the store's row needs is in its opener now
        self._hub = hub if hub is not None else notify_hub.hub()
        self._hub.attach(self)
        return self

    def _start_fast(self, fd: int) -> None:
        """The compiled loop for repeats of calls decided here (notify_fast), when built.
        Eligible: one path, answered CONTINUE whatever the caller's other arguments say,
        decided by this loop alone (not the broker's, not a deny-list entry's, not an
        access(X_OK) that may be answered "yes": see `notify_args.refused_exec`)."""
        lib = notify_fast.load()
        if lib is None:
            return
        eligible: dict[int, tuple[int, int | None]] = {}
        for nr, (name, spec) in self.specs.items():
            if spec.kind not in ("open", "stat") or len(spec.slots) != 1 \
                    or name in A.ACCESS_MODE or nr in self.guarded_nrs or nr in self.net_nrs \
                    or (self.broker is not None and self.broker.handles(name)):
                continue
            eligible[nr] = (spec.slots[0][1] | (notify_fast.EMPTY_FSTAT if spec.kind == "stat"
                                                and spec.flags_arg is not None else 0),
                            spec.flags_arg)
        if not eligible:
            return
        self._fast = notify_fast.FastPath(lib, fd, eligible)
        assert self.engine is not None, "audited runs have an engine"
        self._keys = fast_keys.Keys(self._fast, self.paths, self.engine, self.specs,
                                    self._flag_text)
        self.lingers = True

    # -- what the hub asks -------------------------------------------------------------------
    def fileno(self) -> int:
        assert self.listener is not None, "attach() first"
        return self.listener.fileno()

    def congested(self) -> bool:
        return self.writer is not None and self.writer.congested()

    def relieved(self) -> bool:
        return self.writer is None or self.writer.relieved()

    def shed(self) -> None:
        if self.writer is not None:
            self.writer.shed()

    def cpu_used(self) -> float:
        """This run's trusted CPU so far: its share of the hub's and the writer's
        threads, and its broker process (issue 11.7)."""
        w = self.cpu + (self.writer.cpu if self.writer is not None else 0.0)
        proxy = getattr(self.sup, "proxy", None)
        if proxy is not None and hasattr(proxy, "cpu_used"):
            w += proxy.cpu_used()
        return w + cost.child_cpu(self.broker.pid if self.broker else None)

    # -- one notification (called by the hub when the listener is ready) ---------------------
    def dispatch(self, epfd: int = -1, linger_ms: int = 0, again: bool = False
                 ) -> "bool | Generator[int, None, None] | object":
        """Receive and answer one notification (or, with the fast path, every repeat of
        a decided call until `epfd` -- the hub's epoll -- is ready, MAX_BATCH calls, or
        `linger_ms` of silence). False: the run is over (every task is gone); a
        generator: a call its broker performs, for the hub to resume when the broker's
        socket (what it yields) is readable; `notify_fast.AGAIN`: MAX_BATCH calls were
        answered and more may be pending (the hub calls again with `again`, its listener
        not reported ready); else True."""
        assert self.listener is not None, "attach() starts the loop"
        if self._stop:
            return False
        fast = self._fast
        if fast is not None:
            code, count = fast.serve(epfd, linger_ms, again)
            vanished = fast.vanished()
            unrecorded = fast.unrecorded()
            if count or vanished or unrecorded:
                self._replay(fast, count, vanished, unrecorded)
            if code == notify_fast.FULL:
                return notify_fast.AGAIN
            if code == notify_fast.YIELD:
                return True
            if code == notify_fast.MISS:
                n = Notification.from_buffer(fast.miss())
            elif code == notify_fast.SEND_ERR:
                self.tally.error(f"answer: {os.strerror(fast.err())}")
                return True
            elif code == notify_fast.RECV_ERR:
                return False
            else:   # ENOENT or a hang-up: that caller died, or every task is gone
                return not self.listener.orphaned()
        else:
            try:
                got = self.listener.recv()
            except OSError:
                return False
            if got is None:   # that caller died; or every task is gone and the run is done
                return not self.listener.orphaned()
            n = got
        return self._one(n)

    def _replay(self, fast: Any, count: int, vanished: int, unrecorded: int) -> None:
        """The records of calls the compiled loop answered: what `record` makes of them.
        A run of `k` consecutive calls with one key takes `k` sequence numbers and counts
        `k` times, as `k` records would (Tally.add_run, Writer.put_run). `unrecorded`
        calls were fstat by another name: checked, never recorded, as in `_handle`."""
        tally, writer, slots = self.tally, self.writer, fast.slots
        record_all = self.record_all
        calls = 0
        with self._rec_lock:
            seq = self.seq
            for slot, pid, ts, last, k, at in fast.records(count):
                op, name, path, flags, allowed, rule = slots[slot]
                if at:   # a directory key's call: its directory joined with the name
                    path = root_walk.join(path, os.fsdecode(fast.name(at)))
                seq += 1
                calls += k
                event = (seq, ts, pid, op, name, path, flags, allowed, rule, "kernel", None)
                seq += k - 1
                if k == 1:
                    tally.add(event[0], pid, op, name, path, allowed, rule)
                else:
                    tally.add_run(event[0], pid, op, name, path, allowed, rule, k)
                if allowed and not record_all:
                    continue
                tally.recorded += k
                if writer is not None:
                    if k == 1:
                        writer.put(event)
                    else:
                        writer.put_run(event, k, last)
            self.seq = seq
        calls += unrecorded
        self.fast_answered += calls
        tally.checked += calls + vanished
        tally.vanished += vanished
        if self.budget is not None and \
                (tally.checked // cost.CHECK_EVERY) != (tally.checked - calls - vanished) \
                // cost.CHECK_EVERY:
            self._check_budget()

    def _one(self, n: Notification) -> "bool | Generator[int, None, None]":
        """One notification received and not yet answered."""
        assert self.listener is not None, "attach() starts the loop"
        tally = self.tally
        if n.nr in self.net_nrs and n.arch == AUDIT_ARCH_X86_64 and not (
                n.nr == notify_dispatch.BIND_NR
                and n.args[2] & 0xFFFFFFFF not in notify_dispatch.INET_LENS):
            tally.checked += 1     # (a bind with another address is the audit's: a UNIX
            return self._net_call(n)   # socket's file, probe 1 F8)
        if n.nr == memfd_seal.NR and n.arch == AUDIT_ARCH_X86_64 \
                and self.table.decide(n.nr, n.args) == sp.NOTIFY:
            tally.checked += 1   # made here without an exec bit (memfd_seal)
            memfd_seal.serve(self.listener, self.paths.mem, n)
            return True
        entry = self.specs.get(n.nr)
        if entry is None or n.arch != AUDIT_ARCH_X86_64 or (
                n.nr in self.guarded_nrs and self.table.decide(n.nr, n.args) != sp.NOTIFY):
            self._violation(n)
            return True
        tally.checked += 1
        if self.budget is not None and not tally.checked % cost.CHECK_EVERY:
            self._check_budget()
        try:
            answered = self._handle(n, entry[0], entry[1])
        except PathError as exc:
            answered = False
            tally.error(f"{entry[0]}: {exc}")
        except Exception as exc:   # never leave the caller hanging
            answered = False
            tally.error(f"{entry[0]}: {type(exc).__name__}: {exc}")
        if answered is True:
            return True
        if answered is not False:
            return self._brokered(n, entry[0], answered)
        try:
            self.listener.respond_continue(n.id)
        except OSError:
            pass
        return True

    def _brokered(self, n: Any, name: str, call: Generator[int, None, bool]
                  ) -> Generator[int, None, None]:
        """A brokered call, driven by the hub; answered whatever happens."""
        try:
            answered = yield from call
        except PathError as exc:
            answered = False
            self.tally.error(f"{name}: {exc}")
        except Exception as exc:   # never leave the caller hanging
            answered = False
            self.tally.error(f"{name}: {type(exc).__name__}: {exc}")
        if not answered:
            try:
                self.listener.respond_continue(n.id)  # type: ignore[union-attr]
            except OSError:
                pass

    def _net_call(self, n: Any) -> Generator[int, None, None]:
        """connect and addressed sends under a private network: the broker's (issue 10.6)."""
        name = sp.syscall_name(n.nr)
        try:
            yield from self.broker.handle_net(n, name)  # type: ignore[union-attr]
        except Exception as exc:   # never leave the caller hanging; never CONTINUE
            self.tally.error(f"{name}: {type(exc).__name__}: {exc}")
            try:
                self.listener.respond_error(n.id, errno.EPERM)  # type: ignore[union-attr]
            except OSError:
                pass

    def _check_budget(self) -> None:
        used = self.cpu_used()
        if used > self.budget and not self.over_budget:  # type: ignore[operator]
            self.over_budget = True
            self.sup.on_monitor_budget()

    def _violation(self, n: Any) -> None:
        from sandbox.monitor.seccomp_notify import violation_of
        v = violation_of(n, self.table)
        assert self.listener is not None, "attach() starts the loop"
        try:
            if v is None:   # notified but not audited here: let the layers decide
                self.listener.respond_continue(n.id)
                return
            self.listener.respond_error(n.id, errno.EPERM)
        except OSError:
            pass
        if v is None:
            return
        if not self.kill_mode:
            # errno mode (seccomp.errno_via_notify): refused, counted by name, not fatal
            name = str(v.syscall)
            if name in self.denied_syscalls or len(self.denied_syscalls) < MAX_DENIED_NAMES:
                self.denied_syscalls[name] = self.denied_syscalls.get(name, 0) + 1
            return
        self.sup.on_violation(Violation("seccomp", str(v.syscall), int(v.nr),
                                        [int(x) for x in v.args], int(v.pid)))

    def _handle(self, n: Any, name: str, spec: S.Spec) -> "bool | Generator[int, None, bool]":
        """Answer and record the call; False when it is left to the caller to answer
        CONTINUE (not recorded: the runtime's own exec, an fstat by another name); a
        generator when the broker performs it (see `dispatch`)."""
        assert self.listener is not None and self.engine is not None, "audit loop not attached"
        pid, args = n.pid, n.args
        if self._is_init_exec(pid, name, args):
            return False
        paths = self.paths
        if paths.root_fd is None:
            paths.set_root(pid)
        kind = spec.kind
        if kind == "openat2":
            flags = A.openat2_flags(paths, pid, args[2], args[3])
        elif kind == "creat":
            flags = S.O_CREAT | S.O_WRONLY | S.O_TRUNC
        elif spec.flags_arg is not None:
            flags = args[spec.flags_arg] & 0xFFFFFFFF
        else:
            flags = 0
        if name in S.INVALIDATES:
            paths.invalidate()
        if self.broker is not None and self.broker.handles(name) and not (
                kind in ("open", "openat2") and flags & S.O_PATH):
            # O_PATH is a lookup, like stat (not brokered, and ADDFD cannot pass it): what
            # it can reach later (a reopen through /proc/self/fd) is brokered and decided
            # on the object itself
            return self.broker.handle(n, name, spec, flags)
        results = []
        fast = self._fast
        info: list[Any] | None = [] if fast is not None and n.nr in fast.eligible else None
        raw = ""
        opened_as_is = False
        for dirfd_arg, path_arg, op, follow in spec.slots:
            if kind == "bind":
                sun = S.sun_path(paths.mem.read(pid, args[1], min(args[2] & 0xFFFFFFFF,
                                                                  S.SOCKADDR_UN)))
                if sun is None:
                    return False       # no file named: another family, abstract, autobind
                raw = sun
            else:
                raw = paths.read(pid, args[path_arg])
            if not raw and kind in ("stat", "path", "exec", "link") and flags & S.AT_EMPTY_PATH:
                if kind == "stat":
                    return False       # fstat(2) by another name: not a path lookup
            path = paths.absolute(pid, None if dirfd_arg is None else args[dirfd_arg], raw)
            # interned: the records, verdicts and compiled keys of every run that names
            # this file hold one string (issue 14: the host's growth per live run)
            path = _intern(paths.canonical(path, S.follows(follow, flags),
                                           info if raw.startswith("/") else None, pid))
            if op is None:
                op = S.open_operation(flags)
            verdict = self.engine.decide(op, path)
            if op == "create" and not verdict.allowed and kind != "bind" \
                    and A.exists(paths, path, flags):
                # O_CREAT on what exists creates nothing: the kernel opens it as it is
                # (`2>/dev/null`), so it is decided and recorded as that open, as the
                # broker does; never cached (it holds while the file does)
                op = S.open_operation(flags & ~S.O_CREAT)
                verdict = self.engine.decide(op, path)
                opened_as_is = True
            results.append((op, path, verdict))
        # A symlink's target (an attribute's name) is read from the caller's memory: before
        # the answer lets it run.
        early = kind in ("symlink", "xattr")
        flag_text = self._flag_text(name, kind, flags, pid, args) if early else None
        deny = any(not v.allowed and v.rule.startswith("filesystem.deny") for _, _, v in results)
        # Answer first, record after: the verdict is all the caller waits for. The answer
        # also proves the notification was still pending after the reads above (ENOENT
        # otherwise), which is what a separate NOTIF_ID_VALID ioctl used to establish.
        plain = False
        if deny:
            answered = self.listener.respond_error(n.id, _EACCES)
        elif name in A.ACCESS_MODE and results and results[0][2].allowed and \
                A.refused_exec(paths, self.engine, args[A.ACCESS_MODE[name]], results[0][1]):
            answered = self.listener.respond_value(n.id, 0)   # see notify_args.refused_exec
        else:
            answered = self.listener.respond_continue(n.id)
            plain = True
        if not answered:
            # The caller is gone (killed while waiting): its thread id may already name
            # another task, so what was read is no evidence of anything. Not recorded.
            self.tally.vanished += 1
            return True
        if not early:
            flag_text = self._flag_text(name, kind, flags, pid, args)
        for op, path, v in results:
            self.record(pid, op, name, path, flag_text, v.allowed, v.rule,
                        "monitor" if deny else "kernel", "EACCES" if deny else None)
        if deny:
            self.tally.monitor_denied += 1
        elif plain and info and len(results) == 1 and not opened_as_is:
            # the next calls with this key get this answer and this record: the compiled
            # loop may give them (only what `record` stores varies: seq, pid, time)
            op, path, v = results[0]
            assert self._keys is not None, "info is made with the fast path"
            self._keys.put(n.nr, flags, raw, info, (op, name, path, flag_text, v.allowed,
                                                    v.rule))
        return True

    def _is_init_exec(self, pid: int, name: str, args: Any) -> bool:
        """The sandbox's own init, started once by PID 1 with execveat(fd, "", AT_EMPTY_PATH)
        after the filter is in place: the runtime's act, not the program's, so neither
        recorded (it would teach `policy suggest` to grant this package's directory) nor
        decided (a deny rule over the install location must not stop every run)."""
        if self._init_exec_seen or name != "execveat" or pid != self.sup.pid1:
            return False
        if not args[4] & S.AT_EMPTY_PATH:
            return False
        self._init_exec_seen = True
        return True

    def _flag_text(self, name: str, kind: str, flags: int, pid: int, args: Any) -> str | None:
        return A.flag_text(self.paths, name, kind, flags, pid, args)

    def record(self, pid: int, op: str, name: str, path: str, flags: str | None,
               allowed: bool, rule: str, enforced: str = "kernel",
               result: str | None = None) -> None:
        with self._rec_lock:
            self.seq += 1
            seq = self.seq
            self.tally.add(seq, pid, op, name, path, allowed, rule)
            if allowed and not self.record_all:
                return
            self.tally.recorded += 1
        if self.writer is not None:
            self.writer.put((seq, time.time(), pid, op, name, path, flags, allowed, rule,
                             enforced, result))

    def record_net(self, pid: int, target: str, flags: str, allowed: bool, rule: str,
                   result: str, op: str = "connect", name: str = "proxy") -> None:
        """One connection attempt through the proxy (or a query to its DNS stub: op
        "resolve", name "dns"): always stored (allowed ones too), enforced by the monitor.
        A proxy thread that outlived its run's end (a lookup the stop could not wake)
        finds the loop disposed: the run's records are closed, nothing is kept."""
        lock = self._rec_lock
        if lock is None:
            return
        with lock:
            self.seq += 1
            seq = self.seq
            self.tally.add(seq, pid, op, name, target, allowed, rule)
            self.tally.recorded += 1
        if self.writer is not None:
            self.writer.put((seq, time.time(), pid, op, name, target, flags, allowed,
                             rule, "monitor", result))

    # -- the end -----------------------------------------------------------------------------
    def finish(self, release: bool = True) -> tuple[AuditSummary | None, list[Denied]]:
        """Called once the sandbox is gone: flush the store; the report's audit and denied.
        With `release`, the run's descriptors go too; without, `release()` closes them
        later (the Supervisor does once the report is out: closing the listener frees
        the run's seccomp filter, which the caller need not wait for)."""
        detached = True
        if self._hub is not None and self.hub_done is not None:
            # The hub forgets the run by itself once every task is gone (the listener
            # hangs up), after recording the last answered call (answers go before
            # records). A task not yet released (a zombie of the teardown) keeps the
            # listener open: then the hub is told to forget it, and it records nothing
            # more (the launcher's backstop is wall + 10 s).
            if self.broker is not None and self.broker.busy():
                # a call its broker still performs (a FIFO's open, a full socket's
                # connect) for a caller now gone: ended, answered EPERM and recorded,
                # then the hub watches the listener again and sees it hang up
                self.broker.interrupt()
            if not self.hub_done.wait(0.5):
                self._stop = True
                detached = self._hub.detach(self, 2.0)
        self._stop = True
        self.broker_rusage = self.broker.stop() if self.broker is not None else None
        if not detached and self._hub is not None:
            detached = self._hub.detach(self, 2.0)   # a broker call ended by its stop
        out: tuple[AuditSummary | None, list[Denied]] = (None, [])
        if self.audit or self.net_audit:
            try:
                summary = self._summary()
            except Exception as exc:   # the run's status never depends on the store
                summary = self.tally.summary(dropped=self.tally.recorded, stored=0,
                                             truncated=False, not_stored=0,
                                             db_error=json_text(f"{type(exc).__name__}: {exc}")[0])
            out = (protocol.build(AuditSummary, summary),
                   [protocol.build(Denied, d) for d in self.tally.denied])
        self._detached = detached
        if release:
            self.release()
        return out

    def ending(self) -> None:
        """The run's last process is gone (its stub said so): `finish` comes next."""
        if self.writer is not None:
            self.writer.ending()

    def release(self) -> None:
        """After `finish`: the run's store file (its closing row is written: closing it
        switches its journal mode and lets go of its lock) and descriptors (its memory,
        its root, the compiled loop's cache, the listener; unless the hub could not let
        go of the run)."""
        f, self._store_file = self._store_file, None
        if f is not None:
            try:
                f.close()
            except Exception:
                pass
        self.paths.close_mem()
        if self._detached:
            self.paths.close_root()   # (a hub still holding the run might reuse the numbers)
            if self._fast is not None:   # (... or be inside its loop)
                self._fast.close()
                self._fast = None
            if self.listener is not None:
                self.listener.close()   # pending callers (none, normally) fail with ENOSYS

    def dispose(self) -> bool:
        """After `release`, from `Supervisor.dispose`: let go of every part (see there);
        whether it did. Not while the hub may still hold the run (it could not let go
        of it): the hub dispatches to it until it does."""
        if not self._detached:
            return False
        for name in AuditLoop.__slots__:
            setattr(self, name, None)
        return True

    def _summary(self) -> dict[str, Any]:
        """The audit summary of the run's store (notify_store.summary), with this loop's
        own figures; the store file kept for `release`."""
        broker = self.broker
        extra: dict[str, Any] = {"run_id": self.run_id, "db": self.db_path,
                                 "sync_wakeup": self.sync_wakeup,
                                 "fast_answered": self.fast_answered,
                                 "guarded": list(broker.guarded) if broker else [],
                                 "budget": self.sup.ctx.policy.audit.records}
        if self.net_summary is not None:
            extra["network"] = self.net_summary
        if broker is not None and (broker.pid or broker.failed):
            extra.update(broker_pid=broker.pid, broker_error=broker.failed)
        out, self._store_file = notify_store.summary(self.tally, self.writer, self.run_id,
                                                     self.db_error, extra)
        return out


def prepare(supervisor: RunSide) -> AuditLoop:
    return AuditLoop(supervisor)


def start(fd: int, supervisor: RunSide) -> AuditLoop:
    return AuditLoop(supervisor).attach(fd)
