"""The monitor host: one process that supervises every sandbox of a launcher.

A sandbox used to cost a forked Python monitor of its own (~6 MiB). Here one
process holds every run's `Supervisor` and drives them from one selectors
loop: each run's control channel, its stub's status socket and its setup
socket are sources of the loop, and each run's clocks (wall time, sampling)
its timers. What may block is done off the loop: the end of a run (draining
its output, copying ${OUTPUT} out, closing its audit) by a few shared
threads, and every fork by the zygote (sandbox.monitor.zygote), forked first
while this process still had one thread.

A run arrives as its descriptors (the launcher's `SpawnRequest`, or an exec'd
monitor's own); its `Spec` comes on its control channel; its end goes back as
the `ExitReport` on that channel, then `MonitorExited` on its exit socket.
The launcher closing a run's exit socket (or its control channel) abandons
the run: its sandbox is killed. Nothing of one run is process-wide state:
no signal handler, no descriptor 0-2, no rusage of the process.
"""
from __future__ import annotations

import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.ipc.channel import Channel
from sandbox.launcher import tidy
from sandbox.isolation.context import ContainContext
from sandbox.monitor import runspec, stubs
from sandbox.monitor.preload import EVERY_RUN, PRELOAD, preload, warm  # noqa: F401 (PRELOAD: forkserver)
from sandbox.monitor.supervisor import Supervisor
from sandbox.monitor.zygote import Zygote, Zygotes, ignore_group_signals
from sandbox.protocol import ExitReport, MonitorExited, Spec

if TYPE_CHECKING:
    from sandbox.monitor.pool_stubs import StubPools

# The monitor's exit codes, per run (in MonitorExited) and for an exec'd monitor.
EXIT_REPORTED = 0       # the report went out (or the launcher was gone to take it)
EXIT_NO_SPEC = 2        # the control channel closed or sent no spec: nothing ran
EXIT_PARENT_GONE = 3    # the parent died before the monitor could tie its life to it
EXIT_FAILED = 4         # the monitor itself failed before it could report

SWEEP_EVERY = 2.0       # seconds between checks of the warm pools' policy files
# A refill (a stub's fork and namespaces, its PID 1's fork, the waiter's exec) competes
# for the 2 cores with the runs under way: it waits while one sets up and, unless a
# pool is dry, for the first REFILL_AFTER seconds of its program (exec, loader, the
# first audited calls), which is all of a short run's, and while an ended run's report is
# being made (output copied out, audit store finished: an end worker sharing the cores
# and the interpreter with the refill; alternated, strict /bin/true, 60 settled runs:
# exited -> finished 3.6 -> 1.9 ms); a long run's pools refill beside it after that. A
# dry pool (the next run of its policy would start cold: bursts, runs back to back)
# refills as soon as no run sets up.
REFILL_AFTER = 0.05
# The longest a thread of the host holds the GIL while another waits for it (CPython's
# default is 5 ms). The loop, the notification hub, the audit writer and the end
# workers share it, and a sandbox's notified system call waits while the hub waits for
# the GIL: the loop handling one run's `Ready` kept another's (or the same run's)
# `execveat` waiting up to a whole interval. Alternated against 5 ms (0.5 ms, 3 rounds
# of 40-50 settled runs of /bin/true: 0.4-1.8 ms less per run; throughput at
# concurrency 4 and 16 unchanged or better; audited opens not resolved: 0.71-0.72 of the
# C loop in one pair of runs, 0.64-0.65 in a later one, where 5 ms read 0.65-0.69).
GIL_SWITCH = 0.0005
END_THREADS = 6         # runs ended at once (each drains output, copies ${OUTPUT} out)

@dataclass
class RunFds:
    """One run's descriptors, as the host received them (all the host's to close): the
    IPC socket's sandbox end (-1: the number the spec names, an exec'd monitor's), the
    control socket, the caller's stdin, stdout, stderr, and the exit socket (or None)."""
    ipc: int
    ctl: int
    stdio: list[int]
    exit_sock: socket.socket | None = None


@dataclass
class Run:
    fds: RunFds
    ctl: Channel
    sup: Supervisor | None = None
    ending: bool = False
    reported: bool = False   # its report is sent (set by the end worker)
    code: int = EXIT_REPORTED


class Host:
    def __init__(self, *, spares: bool = True, warmed: bool = True) -> None:
        sys.setswitchinterval(GIL_SWITCH)   # (the zygote, forked next, has one thread)
        # first: this process has one thread now. A zygote that dies later is replaced
        # by fork+exec (`_zygote_replaced`); `warmed`: the replacement warms as we did.
        self.zygote = Zygotes(Zygote.start(), warm=warmed, on_replaced=self._zygote_replaced)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.zygote.current.pidfd, selectors.EVENT_READ, self._zygote_event)
        self.runs: list[Run] = []
        self.spares = spares
        self.spare: stubs.Prestarted | None = None
        self._spare_n = 0
        self._want_spare = False
        self._ended: queue.SimpleQueue[Run] = queue.SimpleQueue()
        self._ends: queue.SimpleQueue[Run | Callable[[], Any] | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self._workers = [threading.Thread(target=self._end_worker, name=f"run-end-{i}",
                                          daemon=True) for i in range(END_THREADS)]
        for t in self._workers:
            t.start()
        # warm pools per effective policy (pool_stubs), tried before the spare
        self.pools: StubPools | None = None
        self._scratch: tuple[str, int] | None = None
        if spares:
            # (imported here: an exec'd one-run monitor, spares=False, never pools, and
            # its imports are on the path of every cold run: ~3 ms of them)
            from sandbox.monitor.pool_stubs import StubPools
            self._scratch = _view_scratch()
            self.pools = StubPools(self.zygote, self.watch, self.unwatch, self._ends.put,
                                   scratch=self._scratch[0] if self._scratch else None)
            self._new_spare()
        self._swept = time.monotonic()

    # -- the selector, for the supervisors ----------------------------------------------
    def watch(self, fileobj: socket.socket | int, callback: Callable[[], None]) -> None:
        self.sel.register(fileobj, selectors.EVENT_READ, callback)

    def unwatch(self, fileobj: socket.socket | int) -> None:
        try:
            self.sel.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    # -- the zygote ----------------------------------------------------------------------
    def _zygote_event(self) -> None:
        """The zygote's pidfd is readable: it died. Replace it now, not at the next run."""
        dead = self.zygote.current
        if dead.death() is not None:   # (not a stale event of a replaced one)
            try:
                self.zygote.replace(dead)
            except OSError:   # no new one could start: the next stub asked for tries again
                self.unwatch(dead.pidfd)

    def _zygote_replaced(self, dead: Zygote) -> None:
        """Its stubs died with it: the spare and the pools' stubs are discarded (and made
        again on the new zygote); runs in flight end as their stub's end says
        (Supervisor: the zygote's death is named in the report)."""
        self.unwatch(dead.pidfd)
        self.watch(self.zygote.current.pidfd, self._zygote_event)
        self._drop_spare()
        self._want_spare = self.spares
        if self.pools is not None:
            self.pools.zygote_died()

    # -- the spare stub ------------------------------------------------------------------
    def _new_spare(self) -> None:
        from sandbox.monitor import cgroups
        from sandbox.policy.model import Limits
        self._spare_n += 1
        try:
            cg = cgroups.create(f"spare{os.getpid()}-{self._spare_n}", Limits(),
                                support=cgroups.probe_cached())
        except (OSError, ValueError):
            cg = None
        try:
            self.spare = stubs.make(self.zygote, cg)
        except OSError:
            if cg is not None:
                cg.remove()
            self.spare = None
            return
        spare = self.spare
        self.watch(spare.status, lambda: self._spare_ready(spare))

    def _spare_ready(self, sp: stubs.Prestarted) -> None:
        if sp is not self.spare:
            return
        self.unwatch(sp.status)
        ready = sp.take_ready()
        if ready is None or not ready.ok:
            if self.zygote.lost(sp.generation) is not None:
                self._want_spare = self.spares   # it died with its zygote: another one
            else:
                self.spares = False     # namespaces cannot be entered here: no more spares
            self._drop_spare()

    def _drop_spare(self, *, now: bool = False) -> None:
        """Discard the spare stub; its cgroups are removed once it is gone (off the
        loop, or `now`, when the host ends)."""
        sp, self.spare = self.spare, None
        if sp is None:
            return
        self.unwatch(sp.status)
        sp.discard()
        if sp.cgroup is not None:
            if now:
                sp.cgroup.remove()
            else:
                self._ends.put(sp.cgroup.remove)

    def take_spare(self, spec: Spec, ctx: ContainContext | None = None
                   ) -> stubs.Prestarted | None:
        """A stub from the run's warm pool (its limits already written: `limits_written`),
        else the spare if it is ready and fits `spec` (a new one is made at once).
        `ctx`: the run's context, whose policy and plan are the spec's, parsed once."""
        if self.pools is not None:
            pre = self.pools.take(spec, ctx)
            if pre is not None:
                return pre
        sp = self.spare
        if sp is None or sp.ready is None or not sp.compatible(spec):
            return None
        if not sp.waiting():   # it died (with its zygote?) since it was ready
            self._drop_spare()
            self._want_spare = self.spares
            return None
        self.spare = None
        self._want_spare = self.spares   # made after this turn's events: off the run's path
        return sp

    # -- runs ----------------------------------------------------------------------------
    def add(self, fds: RunFds) -> Run:
        run = Run(fds, Channel(fds.ctl, max_frame=protocol.SPEC_MAX))
        self.runs.append(run)
        self.watch(run.ctl.sock, lambda: self._spec(run))
        if fds.exit_sock is not None:
            self.watch(fds.exit_sock, lambda: self._abandoned(run))
        return run

    def _spec(self, run: Run) -> None:
        self.unwatch(run.ctl.sock)
        try:
            msg = run.ctl.recv()
            spec = protocol.parse(msg.type, msg.payload, Spec) if msg is not None else None
        except (OSError, ProtocolError):
            spec = None
        if spec is None:
            run.code = EXIT_NO_SPEC
            self._retire(run)
            return
        if run.fds.ipc >= 0:   # handed over: the descriptor arrived with a new number
            runspec.use_ipc_fd(spec, run.fds.ipc)
        run.fds.ipc = -1
        try:
            ctx = runspec.build_context(spec)
        except Exception:   # this run's alone: the host serves other runs (a spec value
            run.code = EXIT_FAILED     # the context could not take ended every run)
            self._retire(run)
            return
        run.sup = Supervisor(spec, ctx, run.ctl, self, run.fds.stdio)
        run.fds.stdio = []
        try:
            run.sup.begin()
        except Exception as exc:
            self._failed(run.sup, exc)

    def _abandoned(self, run: Run) -> None:
        """The launcher closed the run's exit socket: it wants the sandbox gone."""
        sock = run.fds.exit_sock
        assert sock is not None
        try:
            if sock.recv(1):
                return
        except OSError:
            pass
        self.unwatch(sock)
        if run.sup is None:
            self._retire(run)
        else:   # PID 1 (or the stub) killed: the rest follows, never waited for here
            run.sup.report.cancelled = True
            run.sup.kill()

    @staticmethod
    def _failed(sup: Supervisor, exc: BaseException) -> None:
        """The monitor failed for this run: report what we know, take the sandbox down
        (a stub that died with its zygote fails a send: that death is what we know)."""
        if sup.report.monitor_error is None:
            lost = sup.host.zygote.lost(sup.stub.generation) if sup.stub else None
            sup.report.monitor_error = lost or f"{type(exc).__name__}: {exc}"
        try:
            sup.abort()
        except Exception:
            pass
        if sup.status is None:
            sup.status = -1
        sup.status_open = False

    def _retire(self, run: Run) -> None:
        """Off the loop from now on: the end worker finishes it."""
        if run.ending:
            return
        run.ending = True
        if run.sup is not None:
            run.sup.detach()
        if run.fds.exit_sock is not None:
            self.unwatch(run.fds.exit_sock)
        self._ends.put(run)

    def _end_worker(self) -> None:
        while True:
            run = self._ends.get()
            if run is None:
                return
            if not isinstance(run, Run):
                try:
                    run()     # housekeeping: a discarded spare's cgroup
                except Exception:
                    pass
                continue
            try:
                _end(run, self._wake)
            finally:
                self._ended.put(run)
                self._wake()

    def _wake(self) -> None:
        """From an end worker: the loop looks again (a run retired or reported)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass
        while True:
            try:
                run = self._ended.get_nowait()
            except queue.Empty:
                return
            if run in self.runs:
                self.runs.remove(run)
            sup, run.sup = run.sup, None
            if sup is not None:     # ended and reported: its parts go now (`dispose`)
                sup.dispose()

    # -- the loop ------------------------------------------------------------------------
    def step(self) -> None:
        """One turn: wait for the next event or timer, handle it, retire ended runs."""
        now = time.monotonic()
        due = [t for r in self.runs if r.sup is not None and not r.ending
               for t in (r.sup.next_time(),) if t is not None]
        if self.pools is not None and self.pools.pools.keys():
            due.append(self._swept + SWEEP_EVERY)   # a changed policy file frees its pool
        refill_at = self._refill_at(now)
        if refill_at is not None and refill_at > now:
            due.append(refill_at)
        timeout = max(0.0, min(due) - now) if due else None
        for key, _ in self.sel.select(timeout):
            callback = key.data
            try:
                callback()
            except Exception as exc:
                sup = getattr(callback, "__self__", None)
                if isinstance(sup, Supervisor):
                    self._failed(sup, exc)
                else:
                    raise
        now = time.monotonic()
        if self.pools is not None and now - self._swept >= SWEEP_EVERY:
            self._swept = now
            self.pools.sweep()
        for run in list(self.runs):
            sup = run.sup
            if sup is None or run.ending:
                continue
            t = sup.next_time()
            if t is not None and now >= t:
                try:
                    sup.on_time(now)
                except Exception as exc:
                    self._failed(sup, exc)
            if sup.done:
                self._retire(run)
        refill_at = self._refill_at(now)
        if self.pools is not None and refill_at is not None and refill_at <= now:
            self.pools.refill()
        if self._want_spare and self.spare is None:
            self._want_spare = False
            self._new_spare()

    def _refill_at(self, now: float) -> float | None:
        """When the pools may refill (REFILL_AFTER): None while a run sets up (its end
        is not known) and, unless a pool is dry, while an ended run's report is being
        made (`_end` wakes the loop once it is sent); else `now` when a pool is dry or no
        run is in its program's first moments; else the end of the latest such moments."""
        if self.pools is None:
            return None
        at = now
        dry = self.pools.pools.dry()
        for r in self.runs:
            sup = r.sup
            if r.ending and not r.reported and not dry:
                return None   # its end (audit store, output, report) is under way
            if sup is None or r.ending or sup.done:
                continue
            ready = sup.timings.get("sandboxee_ready")
            if ready is None:
                return None
            if not dry:
                at = max(at, sup.t0 + ready + REFILL_AFTER)
        return at

    def close(self) -> None:
        """The launcher is gone: drop the spare (freeing its cgroups), end the zygote
        (every stub, and so every sandbox, dies with it)."""
        self._drop_spare(now=True)
        if self.pools is not None:
            self.pools.close()
        self.zygote.close()
        if self._scratch is not None:   # pooled views are built over it (prebuilt.py)
            tidy.remove_now(*self._scratch)
            self._scratch = None
        for _ in self._workers:
            self._ends.put(None)
        deadline = time.monotonic() + 10.0   # ends under way: their cgroups go too
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))


def _view_scratch() -> tuple[str, int] | None:
    """The directory pooled views are built over (sandbox/isolation/prebuilt.py: each
    pooled PID 1 mounts a tmpfs of its own on it, in its own mount namespace), beside
    the runs' directories, with an owner lock (tidy.own) so that a sweep removes it only
    once this host is gone; None (no view pools) when it cannot be made."""
    import tempfile
    try:
        path = tempfile.mkdtemp(prefix=f"{tidy.PREFIX}view-")
    except OSError:
        return None
    try:
        return path, tidy.own(path)
    except OSError:
        tidy.remove_now(path, -1)
        return None


def _end(run: Run, wake: Callable[[], None] | None = None) -> None:
    """Off the loop: finish the run, send its report, release it."""
    sup = run.sup
    if sup is not None:
        try:
            report = sup.end()
        except Exception as exc:
            Host._failed(sup, exc)
            report = sup.report
        send_exit(run.ctl, report)
    for fd in run.fds.stdio + ([run.fds.ipc] if run.fds.ipc >= 0 else []):
        os.close(fd)
    run.ctl.close()   # with the descriptors above: the launcher's session ends
    run.reported = True
    if wake is not None:
        wake()   # the loop may refill the pools now (Host._refill_at)
    if sup is not None:
        try:
            sup.cleanup()
        except Exception:
            pass
    if run.fds.exit_sock is not None:
        try:
            protocol.send(run.fds.exit_sock, MonitorExited(run.code << 8))
        except OSError:
            pass   # that run's launcher side is gone
        run.fds.exit_sock.close()


def send_exit(ctl: Channel, report: ExitReport) -> None:
    """The exit report, bounded by construction (sandbox.protocol); if even that
    fails, a bare report that still carries PID 1's status."""
    try:
        frame = protocol.to_frame(report, protocol.EXIT_REPORT_MAX)
    except Exception as exc:
        frame = protocol.to_frame(ExitReport(status=report.status, timed_out=report.timed_out,
                                             cancelled=report.cancelled,
                                             monitor_error=f"report: {exc}"),
                                  protocol.EXIT_REPORT_MAX)
    try:
        ctl.sock.sendall(frame)
    except OSError:
        pass  # the launcher is gone


def host_signals() -> None:
    """zygote.GROUP_SIGNALS ignored (a signal to the caller's whole process group is
    the program's, relayed by the launcher); SIGCHLD at its default, so brokers are
    reaped with their rusage."""
    ignore_group_signals()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def serve_launcher(sock: socket.socket, *, spares: bool = True) -> int:
    """The fork server's life: every run the launcher sends, until its socket closes."""
    host_signals()
    warm()
    import gc
    gc.collect()
    gc.freeze()
    host = Host(spares=spares)
    state = {"open": True}

    def request() -> None:
        try:
            msg, fds = protocol.recv(sock, protocol.SpawnRequest)
        except ProtocolError as exc:
            sock.send(protocol.to_datagram(protocol.Refused(f"bad request: {exc}"[:1000])))
            return
        if msg is None:
            state["open"] = False
            host.unwatch(sock)
            return
        if len(fds) != 6:
            for fd in fds:
                os.close(fd)
            protocol.send(sock, protocol.Refused(f"a run needs 6 descriptors, got {len(fds)}"))
            return
        host.add(RunFds(fds[0], fds[1], fds[2:5], socket.socket(fileno=fds[5])))
        protocol.send(sock, protocol.Spawned(os.getpid()))

    host.watch(sock, request)
    while state["open"]:
        host.step()
    host.close()
    return 0


def serve_one(fds: RunFds) -> int:
    """An exec'd monitor: this one run, then exit with EXIT_*."""
    host_signals()
    # imports only (compiling every built-in filter costs more than one run), and only
    # what every run needs: a Python action's PID 1 imports its side (preload.action_side)
    preload(EVERY_RUN)
    host = Host(spares=False, warmed=False)
    run = host.add(fds)
    while run in host.runs:
        host.step()
    host.close()
    return run.code
