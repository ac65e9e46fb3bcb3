"""`Launcher`: run workflows and programs in fresh sandboxes, get RunResults.

    with Launcher(audit_db="audit", max_concurrent=8) as launcher:
        result = launcher.spawn(["echo", "hi"])          # blocking
        handle = launcher.start(["sleep", "60"])          # a RunHandle
        handle.cancel(); handle.wait(10).status           # Status.CANCELLED

A Launcher owns its fork server (started on first use, stopped by `close()`,
by leaving the `with` block, or when the Launcher is garbage-collected).

Per run the launcher makes two socket pairs: the IPC pair (the sandboxee
inherits one end, numbered in ``SANDBOX_IPC_FD``) and the control pair to the
monitor. It starts the monitor, sends it the spec, sends the workflow as the
first IPC frame, and reads until the sandbox is gone. `spawn` is blocking and
thread-safe: run several at once from threads (see `sandbox.parallel`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import socket
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar, Union, cast

from sandbox import protocol
from sandbox.errors import InputError
from sandbox.launcher import caller_state, keep, monitors, signals, tidy, workflow_store
from sandbox.launcher import spec as run_spec
from sandbox.launcher import prepare as P
from sandbox.launcher.assemble import assemble
from sandbox.launcher.early import EarlyMonitor
from sandbox.history import History
from sandbox.launcher.handle import RunHandle
from sandbox.launcher.handlers import Handler, HandlerSet
from sandbox.launcher.result import SETUP_ERROR, RunResult, Status
from sandbox.launcher.session import Budget, Session, kill_quietly
from sandbox.launcher.slots import Slots
from sandbox.launcher.target import classify as target_of, with_dir
from sandbox.middleware.base import IpcMiddleware, SpawnInfo
from sandbox.middleware.hooks import HookRefused, Hooks, SpawnRequest
from sandbox.middleware.run import RunPlumbing
from sandbox.nested import DEFAULT_MAX_DEPTH, Lineage, ceilings as _ceilings
from sandbox.policy.model import Policy


if TYPE_CHECKING:
    import concurrent.futures as cf

    from sandbox.workflow import Workflow

#: What `spawn` runs: a command (strings), a Workflow, a workflow as a dict, or a
#: workflow file or action name (see `spawn`).
Target = Union[Sequence[str], "Workflow", Mapping[str, object], str]
#: IPC middleware: an instance, or a per-run factory called with a SpawnInfo.
MiddlewareLike = Union[IpcMiddleware, Callable[[SpawnInfo], IpcMiddleware]]
M = TypeVar("M", bound=MiddlewareLike)
H = TypeVar("H", bound=Callable[..., object])


def _lost(session: Session | None) -> bool:
    """No report from the monitor (yet): its own exit status is the only word left."""
    rep = None if session is None else session.state.monitor_report
    return rep is None or rep.monitor_lost or rep.monitor_killed


@dataclass(frozen=True)
class RunIO:
    """How a run's stdio is wired (see `Launcher.spawn`)."""
    stdin: bytes | int | None = None
    tty: bool = False
    forward_signals: bool = False


class Launcher:
    """Spawns sandboxes. Handlers, hooks and middleware registered here apply to every run.

    `max_depth` bounds nested spawns (an action's ``ctx.spawn``): the caller's
    run is depth 0 (see `sandbox.nested`). `audit_db` is the audit store
    directory (default: ``sandbox.audit.default_db_path()``). Use it as a context
    manager, or call `close()`: that cancels the runs still going, waits for
    them and stops the launcher's fork server.
    """

    audit_max_bytes: int | None = None   # the audit store's size cap (default:
                                         # $SANDBOX_AUDIT_MAX_BYTES or 1 GiB)

    def __init__(self, *, policy: Policy | str | None = None,
                 budget: Budget | None = None, capture_output: bool = False,
                 max_depth: int = DEFAULT_MAX_DEPTH, start: str = "forkserver",
                 max_concurrent: int = 64, audit_db: str | None = None,
                 history: bool | str | History = True,
                 forkserver: monitors.ForkServerClient | None = None,
                 early: EarlyMonitor | None = None) -> None:
        """`start` is how each run's monitor begins: "forkserver" (default: forked
        from this launcher's warm template) or "exec" (a fresh interpreter per
        run: what the CLI uses for its one run). Never a fork of this process: it
        holds the caller's environment and heap (docs/threat-model.md). At most
        `max_concurrent` sandboxes run at once, nested ones included: a nested
        run borrows the slot of the parent waiting for it, its siblings wait for
        a free one (`sandbox.launcher.slots`); further spawns wait.

        `forkserver`: a warm fork server someone else owns and keeps (the `sandbox
        exec` daemon's, shared by its runs: sandbox.thin.shared), used instead of a
        fork server of this launcher's own; `close()` leaves it running.

        `early`: an exec'd monitor already started (sandbox.launcher.early: the cold
        CLI starts it before its own imports), taken by the first run it fits
        (start="exec", not captured, the same stdin); `close()` drops it if none did."""
        if start not in monitors.START_MODES:
            raise InputError(f"start must be one of {', '.join(monitors.START_MODES)}")
        if max_concurrent < 1:
            raise InputError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.audit_db = audit_db
        # run history (sandbox.history): True = the default database, a str = this file,
        # a History = that one (the `sandbox exec` daemon's relay: sandbox.thin.relay)
        self.history: History | None = None
        if isinstance(history, History):
            self.history = history
        elif history:
            self.history = History(history if isinstance(history, str) else None)
        self.max_concurrent = max_concurrent
        self._forkserver = forkserver or monitors.ForkServerClient()
        self._early = early
        # stops the fork server of a launcher dropped without close() (only its own)
        self._finalizer = weakref.finalize(
            self, (lambda: None) if forkserver is not None else self._forkserver.close)
        self._lock = threading.Lock()
        self._live: set[RunHandle] = set()
        self._pool: "cf.ThreadPoolExecutor | None" = None   # `start`'s, made at its first
        self._closed = False
        self.default_policy = policy
        self.start_mode = start
        # whose process state (signals ignored and blocked, umask, nice, limits...) a
        # program inherits: None, this process; the warm path's fork sets its client's pid
        self.caller_pid: int | None = None
        self.caller_closed = 0      # `sandbox exec`'s closed 0, 1, 2 (sandbox.std_fds)
        # whole lines the caller's terminal held when `sandbox exec -t` made it raw
        # (signals.RawTerminal.ahead): typed into the run's pty first
        self.typed_ahead = b""
        # that terminal, given back while a ^Z keeps the job stopped (signals.Forwarder)
        self.terminal: "signals.Terminal | None" = None
        self._slots = Slots(max_concurrent)   # nested runs count too (launcher/slots.py)
        self.budget = budget or Budget()
        self.capture_output = capture_output
        self.handlers = HandlerSet()
        self.hooks = Hooks()
        self.middleware: list[Any] = []
        self.max_depth = max_depth
        tidy.clean_stale_cgroups()

    # -- lifetime ------------------------------------------------------------
    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Cancel the runs still going (they end "cancelled"), wait for them, stop the
        fork server. Idempotent; spawn/start afterwards raise RuntimeError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live, pool = list(self._live), self._pool
        for handle in live:
            handle.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)
        for handle in live:
            with contextlib.suppress(BaseException):
                handle.wait()
        if self._early is not None:
            self._early.discard()
        if self.history is not None:
            with contextlib.suppress(sqlite3.Error):
                self.history.close()
        tidy.drain()      # no run directory outlives a closed launcher
        self._finalizer()

    @property
    def forkserver_pid(self) -> int | None:
        """The pid of this launcher's fork server, once started (None before/after)."""
        return self._forkserver.pid

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Launcher is closed")

    # -- handlers ------------------------------------------------------------
    def on(self, message_type: str, handler: Handler) -> int:
        """Call `handler(message, run_info)` for each message of this type ('*' = all)."""
        return self.handlers.add(message_type, handler)

    def off(self, handler_id: int) -> bool:
        return self.handlers.remove(handler_id)

    # -- middleware and lifecycle hooks (sandbox.middleware) -------------------
    def use(self, middleware: M) -> M:
        """Add IPC middleware for every run: an instance, or a per-run factory
        called with a SpawnInfo (e.g. the classes Metrics, HmacAuth). First
        registered = outermost. Idempotent by identity."""
        if not any(m is middleware for m in self.middleware):
            self.middleware.append(middleware)
        return middleware

    def unuse(self, middleware: object) -> bool:
        before = len(self.middleware)
        self.middleware = [m for m in self.middleware if m is not middleware]
        return len(self.middleware) != before

    def before_spawn(self, fn: H) -> H:
        """fn(SpawnRequest): may rewrite req.target and tighten (never loosen) req.policy."""
        self.hooks.add("before_spawn", fn)
        return fn

    def after_spawn(self, fn: H) -> H:
        """fn(RunResult, SpawnInfo), called after every spawn, whatever happened."""
        self.hooks.add("after_spawn", fn)
        return fn

    def on_child_message(self, fn: H) -> H:
        """fn(Message, RunInfo) for every message of every run (nested ones too)."""
        self.hooks.add("on_child_message", fn)
        return fn

    def remove_hook(self, fn: Callable[..., object]) -> bool:
        return self.hooks.remove(fn)

    # -- spawning ------------------------------------------------------------
    def spawn(self, target: Target, *, policy: Policy | str | None = None,
              store: Mapping[str, object] | None = None, timeout: float | None = None,
              workdir: str | None = None, output_dir: str | None = None,
              env: Mapping[str, str] | None = None,
              handlers: Mapping[str, Handler] | HandlerSet | None = None,
              capture_output: bool | None = None, item: object = None,
              index: int | None = None, code_paths: Sequence[str] = (),
              middleware: Sequence[MiddlewareLike] = (),
              cancel: threading.Event | None = None,
              grace: float = 2.0, lineage: Lineage | None = None,
              stdin: bytes | int | None = None, tty: bool = False,
              forward_signals: bool = False,
              on_output: Callable[[str, bytes], None] | None = None) -> RunResult:
        """Run `target` sandboxed and return its RunResult: `start(...).wait()`,
        in the calling thread.

        `stdin`: None (the default) gives the program an empty, closed stdin;
        bytes are its whole input; a descriptor (e.g. 0) is relayed to it by
        the monitor. The program never holds a descriptor of the caller's: its
        stdout and stderr are pipes (relayed to this process's 1 and 2, or
        captured), or with `tty=True` a pseudo-terminal the monitor made, sized
        like this process's terminal. `forward_signals` (main thread only)
        relays SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and the rest of
        sandbox.group_signals.RELAYED (and window size changes with a tty) to the
        program while it runs. `on_output(name,
        chunk)` ("stdout" or "stderr") sees captured output as it arrives, in the
        launcher's reading thread (a service streams it; it must not block).

        `target` is a command (a list of strings), a `Workflow`, a workflow
        dict, or the path of a workflow .json file (as `sandbox run` takes it:
        its directory is added to `code_paths`).

        `code_paths` are directories the child may read and import action
        modules from (put on its sys.path). `store`, if given, is updated in place with only the keys the child
        changed or deleted (GoStage's sync-back, with JSON types kept).
        `middleware` is added after the launcher's for this run only. Setting
        `cancel` (from any thread) kills the sandbox: the monitor gets `grace`
        seconds, then is killed itself; the run ends with status "cancelled".
        `lineage` is for the nested-spawn service; callers leave it None.
        Raises InputError for a bad target or policy; every failure of the
        run itself is reported in the RunResult instead. after_spawn hooks
        see the RunResult in every case (a setup_error one when this raises).
        """
        handle = RunHandle(os.urandom(16).hex(), cancel)
        return self._run(handle, target, policy=policy, store=store, timeout=timeout,
                         workdir=workdir, output_dir=output_dir, env=env, handlers=handlers,
                         capture_output=capture_output, item=item, index=index,
                         code_paths=code_paths, middleware=middleware, grace=grace,
                         lineage=lineage, stdin=stdin, tty=tty,
                         forward_signals=forward_signals, on_output=on_output)

    def start(self, target: Target, **spawn_kw: object) -> RunHandle:
        """Start `target` sandboxed in the background; returns its RunHandle at once.

        Takes `spawn`'s arguments. At most `max_concurrent` runs go at once;
        later ones wait their turn (a queued run that is cancelled never
        starts). Errors `spawn` would raise come out of `handle.wait()`.
        """
        self._check_open()
        handle = RunHandle(os.urandom(16).hex(),
                           cast("threading.Event | None", spawn_kw.pop("cancel", None)))
        with self._lock:
            self._check_open()
            if self._pool is None:
                import concurrent.futures as cf   # `start` only: it imports logging
                self._pool = cf.ThreadPoolExecutor(max_workers=self.max_concurrent,
                                                   thread_name_prefix="sandbox-run")
            self._live.add(handle)
            self._pool.submit(self._background, handle, target, spawn_kw)
        return handle

    def _background(self, handle: RunHandle, target: Any, spawn_kw: dict[str, Any]) -> None:
        if handle.cancel_event.is_set():
            with self._lock:
                self._live.discard(handle)
            handle._finish(RunResult(run_id=handle.run_id, status=Status.CANCELLED,
                                     reason="cancelled before it started"))
            return
        with contextlib.suppress(BaseException):   # kept in the handle, raised by wait()
            self._run(handle, target, **spawn_kw)

    def _run(self, handle: RunHandle, target: Any, *, lineage: Lineage | None = None,
             item: Any = None, index: int | None = None, **kw: Any) -> RunResult:
        """One run, in this thread; its outcome also goes to `handle`."""
        try:
            if isinstance(target, str) and target.endswith(".json"):
                from sandbox.workflow import load_workflow
                target = load_workflow(target)
            base_dir = getattr(target, "base_dir", None)
            if base_dir is not None:
                # as `sandbox run`: a workflow file's action code lives beside it
                kw["code_paths"] = with_dir(kw.get("code_paths", ()), base_dir)
        except BaseException as exc:
            handle._finish(None, exc)
            raise
        try:
            with self._lock:
                self._check_open()
                self._live.add(handle)
        except BaseException as exc:
            handle._finish(None, exc)
            raise
        try:
            result = self._spawn_top(handle, target, lineage=lineage, item=item, index=index,
                                     **kw)
        except BaseException as exc:
            handle._finish(None, exc)
            raise
        finally:
            with self._lock:
                self._live.discard(handle)
        handle._finish(result)
        return result

    def _spawn_top(self, handle: RunHandle, target: Any, *, lineage: Lineage | None,
                   item: Any, index: int | None, policy: Policy | str | None = None,
                   store: dict[str, Any] | None = None, timeout: float | None = None,
                   workdir: str | None = None, output_dir: str | None = None,
                   env: Mapping[str, str] | None = None,
                   handlers: Mapping[str, Handler] | HandlerSet | None = None,
                   capture_output: bool | None = None, code_paths: Sequence[str] = (),
                   middleware: Sequence[Any] = (), grace: float = 2.0,
                   stdin: bytes | int | None = None, tty: bool = False,
                   forward_signals: bool = False,
                   on_output: Callable[[str, bytes], None] | None = None) -> RunResult:
        lineage = lineage or Lineage()
        cancel = handle.cancel_event
        info = SpawnInfo(run_id=handle.run_id, depth=lineage.depth,
                         parent_run_id=lineage.parent_run_id, item=item, index=index)
        results: list[RunResult] = []
        try:
            # A nested run may borrow the slot of the parent waiting for it (slots.py).
            lease = self._slots.acquire(lineage.lender, cancel,
                                        lineage.gate if lineage.depth > 0 else None)
            if lease is None:
                results.append(RunResult(run_id=info.run_id, status=Status.CANCELLED,
                                         reason="cancelled while waiting for a sandbox slot"))
                return results[0]
            try:
                results.append(self._spawn(
                    info, dataclasses.replace(lineage, slot=lease), target, policy=policy,
                    store=store, timeout=timeout, workdir=workdir, output_dir=output_dir,
                    env=env, handlers=handlers, capture_output=capture_output,
                    code_paths=code_paths, middleware=middleware, cancel=cancel, grace=grace,
                    handle=handle, on_output=on_output,
                    io=RunIO(stdin=stdin, tty=tty, forward_signals=forward_signals)))
            finally:
                self._slots.release(lease)
            return results[0]
        except BaseException as exc:
            results.append(RunResult(run_id=info.run_id, status=SETUP_ERROR,
                                     reason=f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            self.hooks.after(results[-1], info)

    def _spawn(self, info: SpawnInfo, lineage: Lineage, target: Any, *,
               policy: Policy | str | None, store: dict[str, Any] | None,
               timeout: float | None, workdir: str | None, output_dir: str | None,
               env: Mapping[str, str] | None,
               handlers: Mapping[str, Handler] | HandlerSet | None,
               capture_output: bool | None, code_paths: Sequence[str],
               middleware: Sequence[Any], cancel: threading.Event | None,
               grace: float, handle: RunHandle, io: "RunIO",
               on_output: Callable[[str, bytes], None] | None = None) -> RunResult:
        t_start = time.monotonic()  # the setup-latency breakdown counts from here
        item, index = info.item, info.index
        mode, body = target_of(target)
        wf_policy = getattr(body, "policy", None) if mode == "workflow" else None
        loaded, sources = P.load_sourced(policy or wf_policy or self.default_policy)
        pol = P.tighten_wall(loaded, timeout)
        try:
            req = self.hooks.before(SpawnRequest(body, mode, pol, info))
        except HookRefused as exc:
            return RunResult(run_id=info.run_id, status=SETUP_ERROR, reason=str(exc),
                             policy=pol.name)
        hooked_from = pol if req.policy is not pol else None   # re-checked once resolved
        if hooked_from is not None:
            sources = ()    # a hook's policy is not the files': pooled by its content alone
        (mode, body), pol = target_of(req.target), req.policy
        if mode == "workflow":  # unknown actions are input errors: nothing runs
            from sandbox.workflow.static_check import check_actions
            check_actions(body, code_paths, where=f"workflow {body.name!r}",
                          allowance=lineage.scans)
            workflow_store.check(body, store, item, index, code_paths,
                                 self.budget.max_frame)
        run_id = info.run_id
        session: Session | None = None
        capture = self.capture_output if capture_output is None else capture_output
        early = self._take_early(capture, io.stdin)
        with contextlib.ExitStack() as cleanup:   # every exit path, in reverse order
            if early is not None:
                ipc_parent, ipc_child, ctl_parent, ctl_child = early.take()
            else:
                ipc_parent, ipc_child = socket.socketpair()
                ctl_parent, ctl_child = socket.socketpair()
            cleanup.callback(ipc_parent.close)
            cleanup.callback(ctl_parent.close)
            with contextlib.ExitStack() as child_ends:   # ours until the monitor has them
                child_ends.callback(ipc_child.close)
                child_ends.callback(ctl_child.close)
                prep = P.prepare(run_id, pol, mode=mode, workdir=workdir,
                                 output_dir=output_dir, env=env, ipc_fd=ipc_child.fileno(),
                                 code_paths=code_paths,
                                 ceilings=_ceilings(lineage, hooked_from), cancel=cancel,
                                 hidden=run_spec.audit_store(self.audit_db))
                cleanup.callback(tidy.remove_later, prep.paths.rundir, prep.owner)   # last, off the return path
                result = RunResult(run_id=run_id, policy=prep.policy.name,
                                   output_dir=prep.paths.output)
                started: list[Any] = []
                cleanup.callback(keep.export_workdir, prep, result, started)
                prep.plan = keep.hide_history(prep.plan, self.history)
                initial = copy.deepcopy(store) if store is not None else {}
                if mode == "workflow":
                    initial = {**copy.deepcopy(body.store), **initial}
                t0 = time.monotonic()
                clock = {"t0": t_start, "launcher.prepared": t0 - t_start}
                try:
                    proc, relay = (early.proc, early.relay) if early is not None else \
                        monitors.start_monitor(self.start_mode, ipc_child, ctl_child,
                                               capture, io.stdin, server=self._forkserver)
                except OSError as exc:
                    result.status, result.reason = SETUP_ERROR, \
                        f"cannot start the monitor: {exc}"
                    return result
                started.append(proc)
                # the real exit status is waited for only when no report came
                cleanup.callback(lambda: monitors.end_monitor(proc, need_status=_lost(session)))
                clock["launcher.monitor_started"] = time.monotonic() - t_start
                handle._started(proc.pid)
            # a HandlerSet gives the caller ids to remove run-scoped handlers by, even mid-run
            run_handlers = handlers if isinstance(handlers, HandlerSet) else HandlerSet()
            for type_, fn in ({} if isinstance(handlers, HandlerSet) else handlers or {}).items():
                run_handlers.add(type_, fn)
            plumbing = RunPlumbing(self, info, middleware=middleware, lineage=lineage,
                                   policy=pol, code_paths=code_paths, resolved=prep.policy)
            session = Session(run_id=run_id, proc=proc, ipc=ipc_parent, ctl=ctl_parent,
                              store=copy.deepcopy(initial), budget=self.budget,
                              handler_sets=[self.handlers, *lineage.handler_sets, run_handlers],
                              wall=prep.policy.limits.wall,
                              inbound=plumbing.inbound if len(plumbing.chain) else None,
                              on_message=plumbing.on_message, depth=lineage.depth,
                              cancel=cancel, grace=grace, on_output=on_output)
            # the monitor is stopped (end_monitor, above) once no report can come
            cleanup.callback(lambda: kill_quietly(proc)
                             if proc.poll() is None and _lost(session) else None)
            cleanup.callback(plumbing.close, grace)
            plumbing.attach(session, ipc_parent, run_handlers)
            forwarding = signals.Forwarder(session, tty=io.tty,
                                           stop_self=self.caller_pid is None,
                                           terminal=self.terminal, client=self.caller_pid) \
                if io.forward_signals else contextlib.nullcontext()
            spec = run_spec.spec(prep, mode, body, self.audit_db, self.audit_max_bytes)
            spec.clock = clock
            spec.policy_sources = P.wire_sources(sources)
            spec.caller = caller_state.capture(self.caller_pid)
            spec.caller.closed_std = self.caller_closed & 0b111
            spec.stdio = protocol.StdioWire(
                relay=list(relay),
                tty=protocol.WinSize(*signals.window_size()) if io.tty else None,
                ahead=self.typed_ahead.hex() if io.tty else "")
            session.send_msg(spec)
            if mode == "workflow":
                workflow_store.send(ipc_parent, body, initial, prep.run_id, prep.paths.output,
                                    item, index, code_paths, plumbing.child_specs,
                                    self.budget.max_frame)
            with forwarding:
                state = session.run()
        rep = state.monitor_report
        if rep is not None and (rep.monitor_lost or rep.monitor_killed):
            rep.monitor_exit = proc.returncode
        result.wall_time = time.monotonic() - t0
        assemble(result, state, prep.policy, mode, env_path=prep.env.get("PATH", ""),
                 workdir=prep.paths.workdir, argv=list(body) if mode == "exec" else None,
                 env=prep.env)
        if result.timings:
            result.timings["launcher.done"] = round((time.monotonic() - t_start) * 1000, 3)
        workflow_store.merge(result, state, initial, store)
        plumbing.finish(result)
        keep.leftovers(result, prep, mode, body,
                       self.history if lineage.depth == 0 else None)
        return result

    def _take_early(self, capture: bool, stdin: object) -> EarlyMonitor | None:
        """The early monitor, if this run can take it (once)."""
        with self._lock:
            early = self._early
            if early is None or self.start_mode != "exec" or not early.fits(capture, stdin):
                return None
            self._early = None
            return early
