"""The stub: the monitor's child that enters the namespaces and forks PID 1.

Python 3.11 has no clone(), so a new PID namespace is entered the unshare way:
the stub unshares every namespace, and its next fork becomes PID 1. The stub
then keeps only its status socket to the monitor and replaces itself with the
compiled waiting half, ``sandbox-init --stub`` (sandbox/_native/init.c), which
waits for PID 1, reports its raw wait status, and exits: a live sandbox costs no
Python interpreter between the monitor and PID 1 (issue 14). It holds no other
descriptor, so the IPC socket reaches end of stream as soon as the sandbox's
last process is gone.

PID 1 is forked ahead: as soon as the namespaces are entered, before the run
is known. It waits on the go socket for the run's `Pid1Start` (its context,
built by the monitor host, pickled) and descriptors and takes them itself, while the stub says `StubReady` (with PID 1's pid) and
becomes the waiter at once. So a run taken from a warm pool starts in a PID 1
that already exists: the stub's fork of it (a Python process's page tables)
and the stub's exec of the waiter are no longer between the spec and the
run's first layer (docs/benchmarks-journal.md).

It is the run's child subreaper: without a PID namespace (best_effort on a
machine without user namespaces) the program's orphans re-parent to it, and
once PID 1 has ended it kills and reaps every descendant left before it
reports. So nothing of a run outlives its report, and the monitor (one process
for every run, issue 14) needs no walk of its own descendants.

What it says on the status socket (SOCK_SEQPACKET, sandbox.protocol):
`StubReady` (with PID 1's pid in the monitor's namespace, or why the
namespaces could not be entered), then `Pid1Exited` (raw wait status, with the
CPU and peak memory of everything it reaped: the run's own usage), or a
`SetupFailure` (the cgroups could not be joined, or PID 1 could not decode its
spec).
"""
from __future__ import annotations

import os
import signal
import socket
from typing import Any, Callable

import prctl

from sandbox import protocol
from sandbox.errors import ProtocolError, SetupError
from sandbox.isolation import libc, namespaces, prebuilt
from sandbox.monitor import preload, tree
from sandbox.protocol import ForkStub, Pid1Exited, Pid1Start, SetupFailure, StubReady
from sandbox.sandboxee import forking, memtrace, planned

# A Python action's PID 1 main (planned.start): the start left pickled, the run's
# descriptors, and the pooled view its PID 1 had built (record and ruleset), if any
Undecoded = Callable[[Pid1Start, list[int], prebuilt.Built | None], Callable[[], object]]


def run_waiting(status: socket.socket, go: socket.socket, req: ForkStub,
                start: Callable[[bytes, list[int]], Callable[[], object]],
                init_path: str | None = None,
                undecoded: Undecoded | None = None) -> None:
    """Every stub: join the run's cgroups and enter the namespaces *before* the run is
    known (`req`: sandbox.monitor.zygote), fork PID 1, which waits on `go` for the
    run's `Pid1Start` and descriptors (ipc, stdin, stdout, stderr, exit pipe:
    `_pid1`), and become the waiter `init_path`. Never returns.

    First message: `StubReady` (the monitor discards a stub that is not ok and, for a
    best-effort policy, asks for one without namespaces), or a `SetupFailure` when
    the cgroups could not be joined (that fails closed: the limits live there)."""
    try:
        memtrace.mark("stub.forked")
        prctl.set_pdeathsig(signal.SIGKILL)
        me = str(os.getpid())
        for procs in req.cgroup_procs:   # before unshare: named in the host's view
            try:
                libc.write_file(procs, me)
            except OSError as exc:
                protocol.send(status, SetupFailure(
                    "cgroups", f"cannot move pid {me} into {os.path.dirname(procs)}: "
                    f"{exc.strerror}"))
                os._exit(0)
        if req.namespaces:
            try:
                namespaces.enter_flags(
                    namespaces.ALL | (libc.CLONE_NEWNET if req.network else 0),
                    os.getuid(), os.getgid())
            except SetupError as exc:
                protocol.send(status, StubReady(ok=False, layer=exc.layer,
                                                why=str(exc)[:1000]))
                os._exit(0)
        memtrace.mark("stub.unshared")
    except BaseException as exc:
        _last_word(status, exc)
    _fork_pid1_and_wait(status, lambda: _pid1(status, go, req, start, init_path, undecoded),
                        init_path)


def pid1_of_compiled(status: socket.socket, go: socket.socket, namespaces: bool,
                     start: Callable[[bytes, list[int]], Callable[[], object]],
                     init_path: str, undecoded: Undecoded) -> None:
    """PID 1 forked by the compiled stub (sandbox/_native/stub_fork.c), which joined the
    cgroups, entered the namespaces (`namespaces`), said StubReady and became the
    waiter: from here on, as the Python stub's PID 1 (`_pid1`). Never returns."""
    try:
        _pid1(status, go, ForkStub(namespaces=namespaces), start, init_path, undecoded)
    finally:
        os._exit(126)


def _pid1(status: socket.socket, go: socket.socket, req: ForkStub,
          start: Callable[[bytes, list[int]], Callable[[], object]], init_path: str | None,
          undecoded: Undecoded | None) -> None:
    """PID 1, forked ahead: wait for the run, then run as its PID 1. A Python action's
    start is not unpickled here: `undecoded(start, fds, view)` returns its PID 1's
    main, which has it unpickled by its setup child (sandbox/sandboxee/planned.py),
    which also finishes the pooled view, if any; any other is unpickled here and
    `start(context, fds)` returns PID 1's main (with the view it built: stubs.Pid1Entry).
    The end of `go` without a start (a pooled sandbox discarded) ends it; so does the
    stub's death (PDEATHSIG, set before it waits)."""
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        got, fds = _next_start(go)
        view: prebuilt.Built | None = None
        if got.mode == "view":   # pooled at the "view" level: the view first, then the run
            prebuild = getattr(start, "prebuild", None)
            if fds or prebuild is None or not prebuild(got.context):
                os._exit(0)   # a view that could not be built serves no run
            got, fds = _next_start(go)
            if got.mode not in prebuilt.VIEW_MODES:
                for fd in fds:
                    os.close(fd)
                raise ProtocolError(f"pid1 start: a {got.mode[:16]!r} run in a pooled view")
            view = getattr(start, "built", None)
        memtrace.mark("stub.spec")
        go.close()
        if got.mode == "workflow":
            preload.action_side()   # before any layer: an exec'd monitor's template lacks it
        if (undecoded is not None and init_path and req.namespaces
                and got.mode == "workflow" and not got.in_memfd):
            pid1_main = undecoded(got, fds, view)
        else:
            pid1_main = _decoded(got, fds, start)
        memtrace.mark("stub.context")
        status.close()   # the stub's channel: PID 1 reports on its setup socket
    except BaseException as exc:
        _last_word(status, exc)
    pid1_main()


def _next_start(go: socket.socket) -> tuple[Pid1Start, list[int]]:
    """The next start on the go socket and the descriptors beside it; its end (a pooled
    sandbox discarded) ends PID 1."""
    data, fds, flags, _ = socket.recv_fds(go, protocol.DATAGRAM_MAX + 1, protocol.MAX_FDS)
    if not data and not fds:
        os._exit(0)  # discarded before use
    try:
        if flags & protocol.TRUNCATED:
            raise ProtocolError("datagram or its descriptors truncated")
        return protocol.start_from_bytes(data), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _decoded(got: Pid1Start, fds: list[int],
             start: Callable[[bytes, list[int]], Callable[[], object]]) -> Callable[[], object]:
    """The start unpickled here (`start`): PID 1's main. A start over one datagram
    came in a memfd, the first descriptor."""
    try:
        context = got.context
        if got.in_memfd:
            if not fds:
                raise ProtocolError("pid1 start: no memfd beside it")
            with os.fdopen(fds.pop(0), "rb", closefd=True) as f:
                context = f.read(protocol.SPEC_MAX + 1)
            if len(context) > protocol.SPEC_MAX:
                raise ProtocolError(f"pid1 start: over {protocol.SPEC_MAX} bytes")
        return start(context, fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _fork_pid1_and_wait(status: socket.socket, pid1_main: Callable[[], Any],
                        init_path: str | None) -> None:
    code = 0
    try:
        # The run's subreaper: without a PID namespace, an orphan of the program (a
        # double-forked setsid() daemon) re-parents here, not to the monitor (one
        # process for every run, issue 14), and dies before the report (below).
        prctl.set_child_subreaper(1)
        pid = forking.fork_single_threaded()
        if pid == 0:
            try:
                pid1_main()
            finally:
                os._exit(126)
        protocol.send(status, StubReady(ok=True, pid1=pid))
        from sandbox.isolation.privileges import close_fds
        close_fds({status.fileno()})
        for fd in (0, 1, 2):
            os.close(fd)
        if init_path:
            _become_waiter(status, pid, init_path)   # returns only if the exec failed
        protocol.send(status, _wait_for_the_run(pid))
    except BaseException as exc:  # last resort: say why, never hang the monitor
        _last_word(status, exc)
        code = 1
    os._exit(code)


def _wait_for_the_run(pid1: int) -> Pid1Exited:
    """What the compiled waiter does (init.c `stub`), in Python: wait for PID 1,
    reaping any orphan meanwhile; then kill and reap what is left of the run (only
    without a PID namespace is anything left); PID 1's status with the usage of
    everything reaped."""
    usage = Pid1Exited()

    def add(ru: Any) -> None:
        usage.utime_us += round(ru.ru_utime * 1e6)
        usage.stime_us += round(ru.ru_stime * 1e6)
        usage.max_rss_kib = max(usage.max_rss_kib, ru.ru_maxrss)
    while True:
        try:
            got, st, ru = os.wait4(-1, 0)
        except InterruptedError:
            continue
        add(ru)
        if got == pid1:
            usage.status = st
            break
    me = os.getpid()
    while True:
        try:
            got, _, ru = os.wait4(-1, os.WNOHANG)
        except InterruptedError:
            continue
        except ChildProcessError:
            return usage   # no child, hence no descendant, is left
        if got:
            add(ru)
            continue
        tree.signal_listed(lambda: tree.descendants(me))
        try:
            _, _, ru = os.wait4(-1, 0)
            add(ru)
        except (InterruptedError, ChildProcessError):
            pass


def _become_waiter(status: socket.socket, pid1: int, init_path: str) -> None:
    """Replace this interpreter with ``sandbox-init --stub STATUS_FD PID1``, which sends
    the same Pid1Exited this function's caller would. If the exec fails, the caller
    waits in Python: more memory, same result."""
    try:
        os.set_inheritable(status.fileno(), True)
        os.execv(init_path, ["sandbox-stub", "--stub", str(status.fileno()), str(pid1)])
    except OSError:
        os.set_inheritable(status.fileno(), False)


def _last_word(status: socket.socket, exc: BaseException) -> None:
    try:
        protocol.send(status, SetupFailure("stub", f"{type(exc).__name__}: {exc}"[:4000]))
    except (OSError, ValueError):
        pass
    os._exit(1)
