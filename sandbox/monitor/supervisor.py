"""Supervision of one sandbox: take its stub, watch it, enforce wall time, report.

Driven by the monitor host's one event loop (sandbox.monitor.host), which
watches three sources per run: the stub's status socket, the sandboxee's setup
socket (ready / setup_error / exec_error / the seccomp listener), and the
launcher's control channel (cancel, signal, winsize), each carrying typed
messages (sandbox.protocol) and nothing else. The wall-clock limit is one of
the run's timers on that loop. On timeout or cancel, PID 1 gets SIGKILL, which the
kernel turns into SIGKILL for every process of its PID namespace; without a
PID namespace the stub, the run's subreaper, kills and reaps what is left
(double-forked escapees included) before it reports PID 1's end, with the
run's CPU and memory (`Pid1Exited`): nothing here reads this process's
children, descendants or rusage, which are every run's (issue 14).
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Protocol

from sandbox import fdwait, protocol
from sandbox.errors import ProtocolError
from sandbox.ipc.channel import Channel
from sandbox.isolation.context import ContainContext
from sandbox.monitor import caller_control, run_end, runspec, setup_messages, stubs, tree
from sandbox.monitor.cpu_budget import CpuBudget
from sandbox.monitor.stdio import StdioRelay, StdioSpec
from sandbox.protocol import ExitReport, Pid1Exited, SetupFailure, Spec, StubReady, Violation


SAMPLE_EVERY = 0.05  # seconds between task counts when only RLIMIT_NPROC limits processes

STUB_EXIT_WAIT = 2.0  # seconds `cleanup` waits for a stub whose last message came, at most

class HostLoop(Protocol):
    """What a Supervisor needs of the monitor host (sandbox.monitor.host.Host)."""
    zygote: Any   # sandbox.monitor.zygote.Zygote (typed there: no import cycle here)

    def watch(self, fileobj: socket.socket | int, callback: Callable[[], None]) -> None: ...

    def unwatch(self, fileobj: socket.socket | int) -> None: ...

    def take_spare(self, spec: Spec, ctx: ContainContext | None = None
                   ) -> stubs.Prestarted | None: ...


class Supervisor:
    """One run, driven by the monitor host's event loop (sandbox.monitor.host): `begin`
    takes a stub; `on_status`/`on_setup`/`on_ctl` handle one message each; `on_time`
    handles the clock (wall time, sampling); once the stub's last message (PID 1's
    status, `Pid1Exited`) came, or its status socket ended, `done` is true and `end`
    (run by the host off the loop) tidies up and returns the report; `cleanup` waits
    for the stub's own exit before the cgroup goes."""

    # slotted: one per live run in the monitor host, ~1.5 KiB less than a dict of
    # its attributes (issue 14: the host's growth per live run)
    __slots__ = (
        "_exit_r", "_next_cpu", "_next_sample", "_pending_loop", "caller_stdio", "cgroup",
        "cow_fd", "cpu", "ctl", "ctx", "deadline", "early_signals", "host",
        "host_watches_ctl", "listener", "output_fd", "pid1", "pid1_fd", "proxy", "report",
        "scratch_fd", "shm_fd", "skipped", "spec", "status", "status_open", "stdio",
        "stop_said", "stub", "stub_fd", "stub_pid", "t0", "timings", "usage",
    )

    def __init__(self, spec: Spec, ctx: ContainContext, ctl: Channel, host: HostLoop,
                 caller_stdio: list[int]) -> None:
        self.spec, self.ctx, self.ctl, self.host = spec, ctx, ctl, host
        self.caller_stdio = caller_stdio    # the caller's stdin, stdout, stderr (ours)
        self.stub: stubs.Prestarted | None = None
        self.report = ExitReport()
        self.status: int | None = None  # PID 1's wait status once known (-1: none)
        self.pid1: int | None = None          # PID 1's host pid, for reports only
        self.pid1_fd: int | None = None       # ...and what every signal to it goes through
        # the caller's signals that came before PID 1 was Ready (None once it was): kept,
        # then sent; they were dropped, and a ^C right after `sandbox exec` started was
        # lost, the program running on to its end (probe4 H9)
        self.early_signals: list[int] | None = []
        self.host_watches_ctl = False    # on_ctl is called (the launcher is heard)
        self.stub_pid: int | None = None
        self.stub_fd: int | None = None
        # Times count from the launcher's call when it sent its clock (CLOCK_MONOTONIC
        # is one clock for every process of the machine), else from the spec's arrival.
        clock = spec.clock
        self.t0 = clock.get("t0", time.monotonic())
        self.timings: dict[str, float] = {k: v for k, v in clock.items() if k != "t0"}
        self.mark("spec_received")
        self.cgroup: Any = None             # cgroups.RunCgroup, when the run has one
        self.listener: Any = None           # notify_loop.AuditLoop, once attached
        self.output_fd: int | None = None   # the run's ${OUTPUT} tmpfs, from PID 1
        self.scratch_fd: int | None = None  # the private /tmp, from PID 1
        self._exit_r: int | None = None     # the init's exit pipe, read end
        self._pending_loop: Any = None
        self.cow_fd: int | None = None      # the copy-on-write layer's tmpfs, from PID 1
        self.shm_fd: int | None = None      # the private /dev/shm, from PID 1
        self.proxy: Any = None              # the allowlist proxy (netproxy.monitor_side)
        self.stdio: StdioRelay | None = None
        self.stop_said = False              # ProgramStopped sent, no SIGCONT relayed since
        self.usage = Pid1Exited()           # the run's CPU and memory, from its stub
        self.skipped: dict[str, str] = {}   # layers skipped before PID 1 (best effort)
        self.status_open = False            # the stub's status socket is still open
        self.deadline: float | None = None  # the wall-clock limit
        self._next_sample: float | None = None
        self._next_cpu: float | None = None
        self.cpu = CpuBudget.for_run(None, None, 0, None)

    # -- setup -------------------------------------------------------------
    def _limits_wanted(self) -> bool:
        lim = self.ctx.policy.limits
        return not (lim.memory is None and lim.processes is None and lim.cpu is None)

    def _make_cgroup(self) -> Any:
        """The run's cgroups, limits written, for a stub made for this run."""
        if not self._limits_wanted():
            return None   # the CPU is still counted, from /proc (cpu_budget.py)
        try:
            from sandbox.monitor import cgroups
        except ImportError:
            return None
        return cgroups.create(self.spec.run_id, self.ctx.policy.limits,
                              support=cgroups.probe_cached(), pids_overhead=1)  # + the stub

    def _note_cgroup(self, cg: Any) -> None:
        """RunResult.limits_applied names policy limits (memory, processes), not controllers."""
        self.cgroup = cg
        self.ctx.cgroup_memory = "memory" in cg.applied
        names = {"memory": "memory", "pids": "processes"}
        # The run's own cgroups, shown read-only at the view's /sys/fs/cgroup (sysview.py)
        self.ctx.cgroup_view = getattr(cg, "view", ())
        self.report.limits_applied.update(
            {names[c]: f"cgroup-{v}" for c, v in cg.applied.items() if c in names})

    def _exit_pipe(self) -> int:
        """The pipe on which the sandbox's init writes the program's raw wait status:
        non-blocking on its side (a full pipe never stalls the init), read once here."""
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(w, False)
        os.set_blocking(r, False)
        self._exit_r = r
        return w

    def begin(self) -> None:
        """Take a stub (the host's spare when it fits, else one made for this run) and
        wait for it; the loop calls `on_status` next."""
        network = self.ctx.policy.network.mode != "host"
        pre = self.host.take_spare(self.spec, self.ctx) if self.ctx.namespaces else None
        if pre is not None:
            self.report.prestarted = True
            self.report.pooled = pre.limits_written     # from the run's warm pool
            self.report.view_prebuilt = pre.view_built  # ... its view built (prebuilt.py)
            if pre.cgroup is not None:
                if not pre.limits_written:
                    pre.cgroup.apply_limits(self.ctx.policy.limits, overhead=1)  # + the stub
                self._note_cgroup(pre.cgroup)
        else:
            cg = self._make_cgroup()
            if cg is not None:
                self._note_cgroup(cg)
            pre = stubs.make(self.host.zygote, cg, namespaces=self.ctx.namespaces,
                             network=network)
        self._take_stub(pre)
        self.mark("cgroup_ready")
        self.cpu = CpuBudget.for_run(self.ctx.policy.limits.cpu, self.cgroup, pre.stub_pid,
                                     pre.stub_fd)   # the run's tree, not ours
        if self.cpu.limit is not None:
            self.report.limits_applied["cpu"] = self.cpu.mechanism
        self._prepare_listener()  # overlaps the stub's and PID 1's set-up
        wall = self.ctx.policy.limits.wall
        self.deadline = self.t0 + wall if wall else None
        now = time.monotonic()
        if self._needs_task_sampling():
            self._next_sample = now + SAMPLE_EVERY
        if self.cpu.wants_ticks():
            self._next_cpu = now + self.cpu.next_tick()
        self.host.watch(self.ctl.sock, self.on_ctl)
        self.host_watches_ctl = True
        if pre.ready is not None:
            self._stub_ready(pre.ready)
        if self.ctl.buffered():   # read with the spec (Channel.buffered)
            self.on_ctl()

    def _take_stub(self, pre: stubs.Prestarted) -> None:
        self.stub = pre
        self.stub_pid, self.stub_fd = pre.stub_pid, pre.stub_fd
        self.status_open = True
        self.host.watch(pre.status, self.on_status)
        self.mark("stub_forked")

    def _stub_ready(self, ready: StubReady) -> None:
        """The stub's namespaces are entered (or not: a best-effort policy then runs
        without them, in a stub made without; any other fails closed)."""
        pre = self.stub
        assert pre is not None
        if ready.ok:
            if ready.pid1:
                self._pid1_started(ready.pid1)
            self._go(pre)
            return
        if self._restub(pre):
            return
        layer = ready.layer or "namespaces"
        if self.ctx.policy.best_effort and pre.request.namespaces:
            self.skipped[layer] = ready.why
            self.host.unwatch(pre.status)
            pre.discard()
            self.ctx.namespaces = self.spec.namespaces = False
            self._take_stub(stubs.make(self.host.zygote, self.cgroup, namespaces=False))
            self.cpu = CpuBudget.for_run(self.ctx.policy.limits.cpu, self.cgroup,
                                         self.stub_pid or 0, self.stub_fd)
            return
        self.report.setup_error = SetupFailure(layer, ready.why)
        self.status = -1
        self.kill()

    def _restub(self, pre: stubs.Prestarted) -> bool:
        """A stub that died with its zygote before the run was handed to it: the same
        stub again, on the new zygote (never a weaker one: a zygote's death says nothing
        about the namespaces). False when that is not what happened."""
        if (self.stdio is not None or self.status is not None or self.report.cancelled
                or self.host.zygote.lost(pre.generation) is None):
            return False
        self.host.unwatch(pre.status)
        pre.discard()
        req = pre.request
        self._take_stub(stubs.make(self.host.zygote, self.cgroup, namespaces=req.namespaces,
                                   network=req.network))
        self.cpu = CpuBudget.for_run(self.ctx.policy.limits.cpu, self.cgroup,
                                     self.stub_pid or 0, self.stub_fd)
        return True

    def _go(self, pre: stubs.Prestarted) -> None:
        exit_w = self._exit_pipe()
        tty = self.spec.stdio.tty
        self.stdio = StdioRelay(StdioSpec.from_spec(
            {"relay": self.spec.stdio.relay, "tty": None if tty is None else [tty.rows, tty.cols],
             "ahead": self.spec.stdio.ahead}),
            (self.caller_stdio[0], self.caller_stdio[1], self.caller_stdio[2]))
        self.caller_stdio = []
        try:
            # the mount table goes with it (pid1_start takes it out of self.ctx)
            stubs.go(pre, runspec.pid1_start(self.spec, self.ctx), self.ctx.ipc_fd, exit_w,
                     self.stdio.sandbox)
        finally:
            os.close(self.ctx.ipc_fd)  # only the sandbox may hold it
            self.ctx.ipc_fd = -1
            os.close(exit_w)
        self.stdio.started()
        # The stub has the spec now; the host keeps the parsed context only (a live
        # sandbox's share of the monitor's memory: issue 14's 64 KiB per sandbox): what
        # the rest of the run reads of its spec is its id. (The audit loop keeps the
        # whole spec until its store is opened: argv and paths go in the store's row.)
        spec = self.spec
        spec.policy, spec.fs_plan, spec.env = {}, {}, {}
        self.spec = Spec(run_id=spec.run_id, mode=spec.mode, namespaces=spec.namespaces)
        self.host.watch(pre.setup, self.on_setup)

    # -- events (from the host's loop) -------------------------------------
    @property
    def done(self) -> bool:
        return self.status is not None and not self.status_open

    def on_status(self) -> None:
        pre = self.stub
        assert pre is not None
        if not self._status_message(pre.status):
            if self._restub(pre):
                return
            self.status_open = False
            self.host.unwatch(pre.status)
            if self.status is None:
                self.status = -1
                lost = self.host.zygote.lost(pre.generation)   # the stub died with it
                if lost is not None and self.report.monitor_error is None:
                    self.report.monitor_error = lost
        if self.done:
            self._drain_setup(pre.setup)

    def _drain_setup(self, sock: socket.socket) -> None:
        """Read every message PID 1 and PID 2 sent before the run ended, now, before the
        host retires the run and closes their socket: the loop reads one message per
        readiness of a socket, so under load the stub's last word can be read in the
        same turn as the first of several that wait on the setup socket (`Ready` with
        the layers, an `ExecError`, the output's descriptor). Never blocks: by then
        every process that held the other end is gone, and only what is queued is read."""
        while True:
            try:
                readable = fdwait.readable([sock.fileno()], 0)
            except (OSError, ValueError):   # closed already
                return
            if not readable or not setup_messages.read_one(self, sock):
                return

    def on_setup(self) -> None:
        assert self.stub is not None
        if not setup_messages.read_one(self, self.stub.setup):
            self.host.unwatch(self.stub.setup)

    def on_ctl(self) -> None:
        caller_control.handle(self)

    def next_time(self) -> float | None:
        """When `on_time` is next due (CLOCK_MONOTONIC), or None."""
        due = [t for t in (self.deadline, self._next_sample, self._next_cpu) if t is not None]
        return min(due) if due else None

    def on_time(self, now: float) -> None:
        if self._next_sample is not None and now >= self._next_sample:
            self._sample_tasks()
            self._next_sample = now + SAMPLE_EVERY
        cpu = self.cpu
        if self._next_cpu is not None and now >= self._next_cpu:
            self._next_cpu = None
            if not cpu.exceeded:
                if cpu.sample():
                    self.kill()  # the whole sandbox's CPU budget is spent
                else:
                    self._next_cpu = now + cpu.next_tick()
        if self.deadline is not None and now >= self.deadline:
            self.report.timed_out = True
            self.deadline = None
            self.kill()

    def detach(self) -> None:
        """Off the loop: every source of this run leaves the host's selector."""
        if self.stub is not None:
            for s in (self.stub.status, self.stub.setup):
                self.host.unwatch(s)
        self.host.unwatch(self.ctl.sock)
        self.host_watches_ctl = False

    def end(self) -> ExitReport:
        """Off the loop, once `done`: output, audit, cost; the report."""
        if self.stub is not None:
            self.stub.status.close()
            self.stub.setup.close()
            self.stub.go.close()
        if self.stdio is not None:
            self.stdio.finish()  # every byte of output reaches the caller before the report
            self.report.output_error = self.stdio.write_error
        tmp, shm, self.scratch_fd, self.shm_fd = self.scratch_fd, self.shm_fd, None, None
        run_end.scratch(self.report, tmp, shm)
        self._copy_out()
        self._export_workdir()
        self._finish(self.t0)   # stops the notification thread, the other caller of _kill
        self._close_pidfds(("pid1_fd",))   # the stub's: `cleanup` waits on it
        return self.report

    def abort(self) -> None:
        """After a failure of the monitor itself: take the sandbox down now. PID 1 is
        killed, not the stub: without a PID namespace the stub (the run's subreaper)
        kills and reaps what is left once PID 1 ended (before PID 1 is known, `_kill`
        kills the stub, and PID 1 dies with it)."""
        self.kill()
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def _copy_out(self) -> None:
        """Hand ${OUTPUT} back inert, now that no process of the sandbox is left."""
        fd, self.output_fd = self.output_fd, None
        self.mark("output_copy_started")
        if run_end.output(self.report, self.ctx.fs_plan, self.ctx.paths.output, fd):
            self.mark("output_copied")

    def _export_workdir(self) -> None:
        fd, self.cow_fd = self.cow_fd, None
        if fd is not None:
            run_end.workdir(self.report, self.ctx.fs_plan, self.ctx.paths.output, fd)
            self.mark("workdir_exported")

    def cleanup(self) -> None:
        """After the report went out: what the caller need not wait for."""
        fd = getattr(self, "_exit_r", None)
        if fd is not None:
            os.close(fd)
            self._exit_r = None
        if self.listener is not None:
            self.listener.release()
        if self.stub_fd is not None and self.stub_fd >= 0 and self.cgroup is not None:
            # the stub may still be exiting (the run ended on its last message), and
            # the cgroup it is in cannot go before it; bounded: the waiter has exited
            # already, only the kernel's teardown of its namespaces is left
            try:
                fdwait.readable([self.stub_fd], STUB_EXIT_WAIT)
            except (OSError, ValueError):
                pass
        self._close_pidfds()
        if self.cgroup is not None:
            self.cgroup.remove()

    def dispose(self) -> None:
        """After `end` and `cleanup` (the report is out): let go of the run's parts now.

        WHY: they refer back to the supervisor and to one another (the audit loop,
        its compiled keys and broker, their callbacks), so refcounting never freed an
        ended run: each one's whole graph, ~13 KiB, waited in the host for a full
        collection of the cyclic GC, and the pages it had spread over stayed the
        host's (~30 KiB per ended run, growing burst after burst)."""
        loop = self.listener
        if loop is not None and not loop.dispose():
            return      # the hub still holds the run: it may call back here (GC's, then)
        for name in Supervisor.__slots__:
            setattr(self, name, None)

    def _needs_task_sampling(self) -> bool:
        """Without a pids cgroup, RLIMIT_NPROC stops a fork bomb but says nothing;
        sampling the sandbox's task count is how the result can still name the cause."""
        lim = self.ctx.policy.limits.processes
        return lim is not None and "processes" not in self.report.limits_applied

    def _sample_tasks(self) -> None:
        if self.pid1 is None or self.pid1_fd is None:
            return   # PID 1 not yet started, or gone (and its tree with it, or soon)
        stub, fd = self.stub_pid, self.stub_fd
        if stub is None or fd is None:
            return
        # RLIMIT_NPROC counts every task of the uid (in the user namespace): the
        # stub is one of them, and so are orphans re-parented to it (no PID namespace).
        n = tree.count_tasks(stub)
        if not tree.pidfd_holds(fd, stub):
            return  # the stub reaped meanwhile: that count may have been another process's
        self.report.max_tasks = max(self.report.max_tasks, n)
        if n >= (self.ctx.policy.limits.processes or 0):
            self.report.pids_limit_hit = True

    def mark(self, phase: str) -> None:
        """Seconds since the monitor got its spec: the setup-latency breakdown."""
        self.timings.setdefault(phase, time.monotonic() - self.t0)

    def _status_message(self, sock: socket.socket) -> bool:
        """One message of the stub's; False at its end (or a malformed one: the stub
        is ours, so that is a bug, and PID 1's status is then unknown)."""
        try:
            msg, _ = protocol.recv(sock, StubReady, Pid1Exited, SetupFailure,
                                   max_fds=0)
        except (OSError, ProtocolError):
            return False
        if msg is None:
            return False
        if isinstance(msg, StubReady):
            if self.stub is not None and self.stub.ready is None:
                self.stub.ready = msg
                self._stub_ready(msg)
        elif isinstance(msg, Pid1Exited):
            self.status = setup_messages.program_status(self._exit_r, msg.status,
                                                        self.report)
            self.usage = msg
            # The waiter's one message, written once PID 1 and every process left of
            # the run are reaped: nothing of the sandbox runs any more, and the stub
            # says nothing after it. Its socket's end would come only with the stub's
            # own exit, its namespaces torn down (~0.3-1 ms): the run ends now, and
            # `cleanup` waits for that exit before it removes the cgroup.
            self.status_open = False
            self.mark("exited")
            if self.listener is not None:
                self.listener.ending()   # its store's last steps, readied meanwhile
        elif isinstance(msg, SetupFailure):
            self.report.setup_error = msg
            self.status = -1
        return True

    def _prepare_listener(self) -> None:
        """Build the notification loop now if this run will hand us a listener."""
        self._pending_loop = None
        from sandbox.isolation.seccomp import wants_listener
        if wants_listener(self.ctx.policy.syscalls.on_violation, self.ctx.audit_files,
                          self.ctx.policy.network.mode):
            from sandbox.monitor import notify_loop
            self._pending_loop = notify_loop.prepare(self)

    def start_listener(self, fd: int) -> None:
        """Seccomp notifications: violations (kill mode) and file audit."""
        from sandbox.monitor import notify_loop
        loop = self._pending_loop or notify_loop.prepare(self)
        self.listener = loop.attach(fd)

    def on_monitor_budget(self) -> None:
        """Called by the notification loop: the run made the monitor and its broker
        spend more CPU than limits.monitor_cpu; end the sandbox (issue 11.7)."""
        self.report.monitor_limit_hit = True
        self.kill()

    def on_violation(self, violation: Violation) -> None:
        """Called by the notification loop: record the first violation, end the sandbox."""
        if self.report.violation is None:
            self.report.violation = violation
        self.kill()

    def _pid1_started(self, pid: int) -> None:
        """PID 1 exists (forked ahead by the stub, waiting for the spec): its pidfd."""
        self.pid1 = pid
        self.pid1_fd = self._open_pid1(pid)
        self.mark("pid1_forked")

    def _open_pid1(self, pid: int) -> int | None:
        """PID 1's pidfd. The stub may already have reaped it and its number gone to
        another process: accept the pidfd only if, while held, that process is the
        stub's child (the stub is ours and unreaped, and forks nothing else).
        None means PID 1 is gone, and with it (PID namespace) its whole tree."""
        def child_of_stub() -> bool:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
                return int(stat[stat.rfind(b")") + 2:].split()[1]) == self.stub_pid
            except (OSError, ValueError, IndexError):
                return False
        return tree.open_pidfd(pid, child_of_stub)

    def _close_pidfds(self, names: tuple[str, ...] = ("pid1_fd", "stub_fd")) -> None:
        for name in names:
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                os.close(fd)

    def kill(self) -> None:
        fd = self.pid1_fd
        if fd is not None:
            tree.send(fd)   # never os.kill(pid): the number may be another process's now
        elif self.stub_fd is not None and self.stub_fd >= 0:
            tree.send(self.stub_fd)   # before PID 1 is known: the stub, and PID 1 with it
        if not self.ctx.namespaces and self.cgroup is not None:
            # No PID namespace to take everything down with PID 1: the cgroup kills
            # the rest now; else the stub (the run's subreaper) does once PID 1 ended.
            self.cgroup.kill_all()

    def _finish(self, t0: float) -> None:
        rep = self.report
        rep.status = -1 if self.status is None else self.status
        rep.wall_time = time.monotonic() - t0
        # Every process that ever ran in the sandbox: the meter (a cgroup, exact; or
        # the last /proc sum) and PID 1's rusage as the stub waited for it (PID 1 reaps
        # the whole tree), whichever saw more. Several runs share this process, so
        # nothing here may read the process's own or its children's rusage.
        ru = self.usage
        self.cpu.sample(final=True)
        rep.cpu_time = max((max(0, ru.utime_us) + max(0, ru.stime_us)) / 1e6, self.cpu.used)
        rep.cpu_limit_hit = self.cpu.exceeded
        rep.max_rss = max(0, ru.max_rss_kib) * 1024
        rep.pids = {"monitor": os.getpid(), "monitor_parent": os.getppid(),
                    "sandboxee": self.pid1 or 0}
        if self.proxy is not None:
            self.proxy.stop()   # before the audit loop: its last records, its summary
        if self.listener is not None:
            self.mark("audit_finishing")
            rep.audit, rep.denied = self.listener.finish(release=False)   # `cleanup` does
            rep.denied_syscalls = dict(self.listener.denied_syscalls)
        from sandbox.monitor import cost
        rep.monitor_cpu, rep.monitor_peak_memory = cost.totals(self.listener)
        budget = self.ctx.policy.limits.monitor_cpu
        if budget is not None and rep.monitor_cpu > budget:
            rep.monitor_limit_hit = True
        if self.cgroup is not None:
            rep.oom_killed = bool(self.cgroup.oom_killed())
            rep.pids_limit_hit = rep.pids_limit_hit or bool(self.cgroup.pids_limit_hit())
            peak = self.cgroup.max_memory()
            if peak:
                rep.max_rss = max(rep.max_rss, peak)
        self.mark("finished")
        rep.timings = {k: round(v * 1000, 3) for k, v in self.timings.items()}

