"""The namespace-wide layers (namespaces, mounts, network), run in a throw-away child of PID 1.

Why: a Python action's program (PID 2) is a fork of PID 1, and every page of
the warm template that PID 1's Python writes is copied then and becomes PID
2's own once PID 1 has exec'd the compiled init (docs/benchmarks-journal.md, "Where a
Python action's program memory comes from"). These three layers were the
largest writers (~1.1 MiB of the program's pages: the mount table, its ~40
helpers, the system view), yet what they make belongs to the namespaces, not
to the process that made it: the hostname (UTS), the mount view and the root
(pivot_root moves the root of every process of the mount namespace whose root
was the old one), `lo` and the proxy's sockets (network). So a fork of PID 1
applies them and exits, and its copied pages die with it.

What is per process comes back on a socket, in one message: the descriptors
the mount layer opened (${OUTPUT}, the copy-on-write tmpfs, /tmp, /dev/shm),
the variables the layers set (the proxy's), which layers were applied or
skipped (best_effort) and their timings, and the mount table's real paths,
which Landlock's rules use. PID 1 then changes to the working directory
itself. An error is relayed as the same `SetupError` (layer and text); a child
that ends without its answer fails the run: a layer never silently stays
unapplied.

The child is PID 1's fork at that point: the same credentials, namespaces and
descriptors, nothing more. PID 1 writes 2 to /proc/sys/kernel/ns_last_pid
before the fork (its user namespace's CAP_SYS_ADMIN), so the child takes pid
3, and 1 as soon as the answer is in (before the privileges layer drops that
capability), so that its next fork, the program, is PID 2 as before. PID 1
goes on meanwhile and reaps the child just before the program is made
(`reap`): the child's exit, the teardown of its copy of PID 1 (~2 ms), runs
beside PID 1's last layers instead of before them, and no process but PID 1
holds what the child held once the program exists. (Where 2 cannot be written
the child takes pid 2 and is reaped before 1 is written, as before.) Where
ns_last_pid cannot be opened the layers run in PID 1 itself (`available`):
more memory, same sandbox.
"""
from __future__ import annotations

import marshal
import os
import socket
from typing import Any, Callable, Sequence

from sandbox.errors import SetupError
from sandbox.isolation.context import ContainContext
from sandbox.isolation.mount_steps import Prepared
from sandbox.sandboxee import forking

Layer = Callable[[ContainContext], None]
NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
# what the mount layer opens, and the Landlock ruleset made ahead (`ahead`)
FDS = ("output_fd", "cow_fd", "scratch_fd", "shm_fd", "landlock_ruleset")
_FDS = FDS
_MAX = 1 << 18   # bytes of the answer: the real paths of a plan's rules dominate it


# as sandbox.protocol.TRUNCATED: a plain int, not an IntFlag `|` (the enum's Python)
_TRUNCATED = int(socket.MSG_TRUNC) | int(socket.MSG_CTRUNC)

IN_CHILD = False   # True in the setup child (namespaces.apply checks PID 1 or this)
_UNREAPED: list[int] = []   # the setup child, once its answer is in (`reap`)


class Relayed(SetupError):
    """The child's SetupError (or other exception), with its layer and exact text."""

    def __init__(self, layer: str, text: str) -> None:
        self.layer = layer
        Exception.__init__(self, text)


def available() -> int:
    """A descriptor of ns_last_pid to write once the child is reaped, or -1."""
    try:
        return os.open(NS_LAST_PID, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def run(ctx: ContainContext, layers: Sequence[tuple[str, Layer]],
        apply: Callable[[ContainContext, str, Layer], None], last_pid_fd: int,
        ahead: Layer | None = None) -> None:
    """Apply `layers` (each through `apply`, contain's own step) in a child, then
    `ahead` (what later layers can compute in advance; whatever it could not, PID 1
    does at their turn); take the results into `ctx`. Raises SetupError (the
    child's, or why it gave none)."""
    data, fds = in_child(lambda sock: _child(ctx, layers, apply, ahead, sock), last_pid_fd,
                         len(_FDS))
    _handed_over(ctx)
    if not data:
        for fd in fds:
            os.close(fd)
        raise SetupError(layers[0][0], "the setup process ended without an answer")
    _take(ctx, marshal.loads(data), fds)


def _handed_over(ctx: ContainContext) -> None:
    """Once the child answered: PID 1's own descriptor of a pooled view's Landlock
    ruleset made ahead (sandbox/isolation/prebuilt.py) goes. The child completed that
    ruleset and sent it back as the run's, or made a whole one; either way a Python
    action's program, a fork of PID 1, must not inherit it."""
    pre = ctx.prebuilt
    if pre is not None and pre.ruleset >= 0:
        fd, pre.ruleset = pre.ruleset, -1
        ctx.keep_fds = tuple(f for f in ctx.keep_fds if f != fd)
        os.close(fd)


def in_child(work: Callable[[socket.socket], None], last_pid_fd: int,
             max_fds: int) -> tuple[bytes, list[int]]:
    """Run `work` in a throw-away child, which answers on the socket it is given with
    one message (and its descriptors, received here not inheritable); then give its
    pid back (ns_last_pid, module doc). b"" when it ended without an answer."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # the child takes pid 3, so that 2 is free for the program as soon as the answer is
    # in, without waiting for the child's exit (the teardown of its copy of PID 1, ~2 ms
    # on the run's path); it is reaped before the program exists (`reap`)
    early = _last_pid(last_pid_fd, b"2")
    try:
        pid = forking.fork_single_threaded()
        if pid == 0:
            global IN_CHILD
            IN_CHILD = True
            try:
                ours.close()
                work(theirs)
            finally:
                os._exit(0)
        theirs.close()
        try:
            data, fds, flags, _ = socket.recv_fds(ours, _MAX, max_fds)
        finally:
            if early:
                _UNREAPED.append(pid)
            else:
                os.waitpid(pid, 0)
            _last_pid(last_pid_fd, b"1")   # the program is PID 2 (module doc)
    finally:
        ours.close()
        os.close(last_pid_fd)
    for fd in fds:
        os.set_inheritable(fd, False)   # received inheritable: the program must not get it
    if flags & _TRUNCATED:
        for fd in fds:
            os.close(fd)
        return b"", []
    return data, fds


def _last_pid(fd: int, value: bytes) -> bool:
    """Write ns_last_pid. At offset 0 each time: the kernel ignores a write of a number
    at any other (kernel.sysctl_writes_strict)."""
    try:
        os.pwrite(fd, value, 0)
        return True
    except OSError:
        return False


def reap() -> None:
    """Before the program exists (sandbox.sandboxee.entry.start_program): the setup
    child has ended and is reaped, so no process but PID 1 holds what it held (the
    monitor's socket among them) once the program runs, and its pid is free."""
    while _UNREAPED:
        try:
            os.waitpid(_UNREAPED.pop(), 0)
        except ChildProcessError:
            pass


def _take(ctx: ContainContext, answer: tuple[Any, ...], fds: list[int]) -> None:
    error, active, skipped, timings, env, names, real, abi, program = answer
    ctx.landlock_abi, ctx.seccomp_program = abi, program
    ctx.active.extend(active)
    ctx.skipped.update(skipped)
    ctx.timings.update(timings)
    os.environ.update(env)
    for name, fd in zip(names, fds):
        setattr(ctx, name, fd)
        if name in ("scratch_fd", "shm_fd", "landlock_ruleset"):
            ctx.keep_fds = (*ctx.keep_fds, fd)
    if real is not None:
        ctx.mount_table = Prepared(ctx.fs_plan, [], real)
    if "mounts" in active:
        # pivot_root moved this process's root, not its working directory
        os.chdir("/")
        try:
            os.chdir(ctx.paths.workdir)
        except OSError:
            pass   # not in the view: stay at /, as mounts.enter_view does
    if error is not None:
        raise Relayed(*error)


def _child(ctx: ContainContext, layers: Sequence[tuple[str, Layer]],
           apply: Callable[[ContainContext, str, Layer], None], ahead: Layer | None,
           sock: socket.socket) -> None:
    env = dict(os.environ)
    ctx.active, ctx.skipped, ctx.timings = [], {}, {}
    error = apply_layers(ctx, layers, apply, ahead)
    held = [(n, getattr(ctx, n)) for n in _FDS if getattr(ctx, n) not in (None, -1)]
    real = ctx.mount_table.real if ctx.mount_table is not None else None
    changed = {k: v for k, v in os.environ.items() if env.get(k) != v}
    answer = marshal.dumps((error, ctx.active, ctx.skipped, ctx.timings, changed,
                            [n for n, _ in held], real, ctx.landlock_abi,
                            ctx.seccomp_program))
    socket.send_fds(sock, [answer], [fd for _, fd in held])


def apply_layers(ctx: ContainContext, layers: Sequence[tuple[str, Layer]],
                 apply: Callable[[ContainContext, str, Layer], None],
                 ahead: Layer | None) -> tuple[str, str] | None:
    """In the child: `layers` through `apply`, then `ahead` if they all applied;
    the (layer, text) of the error that stopped them, or None."""
    error = None
    try:
        for name, layer in layers:
            apply(ctx, name, layer)
    except SetupError as exc:
        error = (exc.layer, str(exc))   # PID 1 reports both as they are (entry.py)
    except BaseException as exc:
        error = ("sandboxee", f"{type(exc).__name__}: {exc}")
    if error is None and ahead is not None:
        try:
            ahead(ctx)
        except BaseException:
            pass   # PID 1 computes it at its turn, and fails there if it must
    return error
