"""A Python action's PID 1, which leaves the run's start unpickled.

Why: a Python action's program (PID 2) is a fork of PID 1, a fork of the stub;
once both have exec'd the compiled init and waiter, every page of the warm
template that their Python wrote is the program's own (docs/benchmarks-journal.md,
"Where a Python action's program memory comes from"). Taking the run's
containment context (the policy, the filesystem plan, the mount table) was
among the largest writers. So a Python action's PID 1 keeps its `Pid1Start`'s
pickled context as bytes (the start says the spec's mode), and its throw-away
setup child (sandbox/isolation/apart.py) unpickles it, applies the
namespace-wide layers, builds the Landlock ruleset and the seccomp program,
and answers with a `Pid1Plan`: only what PID 1 and PID 2 still need
(the environment, the policy without its filesystem rules, the descriptors).
The copied pages die with the child.

PID 1 then enforces the per-process layers (limits, privileges, Landlock,
seccomp) in the same order, from a context built of the plan, and goes on as
`entry.main` does. A start that does not unpickle fails the run (layer
"stub"); a child that ends without its answer fails it too. Where ns_last_pid
cannot be opened (the program would not be PID 2), PID 1 takes the start itself
and runs `entry.main`: more memory, same sandbox. An exec'd program's PID 1
takes its start itself too: its PID 2 execs, so these pages go at exec
anyway, and a setup child would only cost its fork.

A PID 1 pooled at the "view" level (sandbox/isolation/prebuilt.py) had the
policy's part of the view built before its run, by a throw-away child as
well; its setup child is given that record and the Landlock ruleset made with
it, and does only the run's own steps and rules (the mount layer's
`Prebuilt.finish`, Landlock's `Prebuilt.landlock`). PID 1 closes its own
descriptor of that ruleset once the child answered.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import socket
import sys
from typing import Any, Callable, Sequence

import prctl

from sandbox import _native, protocol
from sandbox.errors import ProtocolError, SetupError
from sandbox.isolation import apart, libc, prebuilt
from sandbox.isolation.contain import SEQUENCE, _ahead, _apply, contain
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.isolation.libc import adopt_stdio
from sandbox.policy.model import NetworkPolicy, Policy, SyscallPolicy
from sandbox.policy.plan import FsPlan
from sandbox.protocol import Pid1Plan, Pid1Start, Spec
from sandbox.sandboxee import entry, memtrace

# The setup child applies SEQUENCE's layers up to this one: the namespace-wide ones, and
# the limits, which it sets on PID 1 with prlimit(2) (limits._set)
_DONE = [name for name, _ in SEQUENCE].index("limits")
# what PID 1's per-process layers read of the policy (Pid1Plan.policy)
_FD_NAMES = ("init_fd", *apart.FDS)   # the descriptors a plan may name


View = prebuilt.Built   # a pooled view PID 1 built: its record and Landlock ruleset


def start(setup_fd: int) -> Callable[[Pid1Start, list[int], View | None], Callable[[], object]]:
    """In PID 1: its main for a start left pickled, the run's descriptors and the view
    it built in the pool (sandbox/isolation/prebuilt.py), if any."""
    def pid1(got: Pid1Start, fds: list[int], view: View | None = None) -> Callable[[], object]:
        return lambda: main(got.context, fds, setup_fd, view)
    return pid1


def main(data: bytes, fds: list[int], setup_fd: int, view: View | None = None) -> None:
    """PID 1 of a Python action (module doc). Never returns. `view`: a pooled view,
    finished by the setup child (its mount layer's late steps, its Landlock ruleset
    completed); PID 1's descriptor of that ruleset goes once the child answered."""
    mon = socket.socket(fileno=setup_fd)
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if len(fds) != 5:
            raise apart.Relayed("stub", f"ProtocolError: the stub got {len(fds)} "
                                        "descriptors, not 5")
        adopt_stdio(*fds[1:4])
        ipc_fd, exit_fd = fds[0], fds[4]
        last_pid = apart.available()
        if last_pid < 0:
            _decode_here(data, ipc_fd, exit_fd, setup_fd, view)   # never returns
        keep = (*entry.trace_start(), exit_fd)
        got, held = apart.in_child(
            lambda sock: _child(data, ipc_fd, exit_fd, setup_fd, keep, sock, view), last_pid,
            len(apart.FDS) + 1)
        if view is not None and view[1] >= 0:
            os.close(view[1])   # the child's now (completed, or replaced by a whole one)
        if not got:
            for fd in held:
                os.close(fd)
            raise SetupError("namespaces", "the setup process ended without an answer")
        plan = protocol.plan_from_bytes(got)
        if plan.error is not None:
            for fd in held:
                os.close(fd)
            raise apart.Relayed(plan.error[0], plan.error[1])
        ctx = _context(plan, held, keep)
        memtrace.mark("pid1.plan")
        contain(ctx, after=SEQUENCE[_DONE][0], before_filter=lambda c: entry.hand_over(c, mon))
        entry.report(ctx, mon)
    except SetupError as exc:
        protocol.send(mon, entry._setup_failure(exc.layer, str(exc)))
        os._exit(entry.EXIT_SETUP)
    except BaseException as exc:
        protocol.send(mon, entry._setup_failure("sandboxee", f"{type(exc).__name__}: {exc}"))
        os._exit(entry.EXIT_SETUP)
    entry.start_program(ctx, mon, tty=plan.stdio_tty, mode="workflow", argv=None)


def _decode_here(context: bytes, ipc_fd: int, exit_fd: int, setup_fd: int,
                 view: View | None) -> None:
    """No setup child (no ns_last_pid): the start taken in PID 1, then `entry.main`."""
    spec, ctx = _decode(context, ipc_fd, exit_fd, setup_fd)
    prebuilt.attach(ctx, view)
    entry.main(ctx, spec)


def _decode(context: bytes, ipc_fd: int, exit_fd: int,
            setup_fd: int) -> tuple[Spec, ContainContext]:
    """The spec and its context, as the stub takes them (sandbox.monitor.stubs); a start
    that does not unpickle, or is no Python action's, fails as the stub's did."""
    from sandbox.monitor import runspec
    try:
        spec, ctx = runspec.from_start(context, ipc_fd, exit_fd, setup_fd)
        if spec.mode != "workflow":
            raise ProtocolError(f"spec: mode {spec.mode[:16]!r} sent as a Python action's")
    except Exception as exc:
        raise apart.Relayed("stub", f"{type(exc).__name__}: {exc}"[:4000]) from None
    return spec, ctx


def _child(data: bytes, ipc_fd: int, exit_fd: int, setup_fd: int, keep: tuple[int, ...],
           sock: socket.socket, view: View | None = None) -> None:
    """The setup child: decode, prepare, apply the namespace-wide layers and build what
    the later ones enforce (contain's `_ahead`); answer with the `Pid1Plan`. With a
    pooled `view`, its mount layer does only the run's own steps and its Landlock
    ruleset completes the one made ahead (prebuilt.Prebuilt.finish and .landlock)."""
    plan = Pid1Plan()
    ctx: ContainContext | None = None
    try:
        spec, ctx = _decode(data, ipc_fd, exit_fd, setup_fd)
        memtrace.mark("setup.context")
        os.environ.clear()
        os.environ.update(spec.env)
        ctx.init_fd = _native.open_init(spec.init_path)
        if spec.stdio.tty is not None and os.isatty(0):
            ctx.tty = os.ttyname(0)   # the monitor's pty, named in the host's /dev/pts
        ctx.keep_fds = (*keep, ctx.init_fd)
        prebuilt.attach(ctx, view)
        plan.stdio_tty = spec.stdio.tty is not None
        ctx.rlimit_pid = os.getppid()   # PID 1: the limits are its (limits._set)
        error = apart.apply_layers(ctx, SEQUENCE[:_DONE + 1], _apply, _ahead)
        plan.error = list(error) if error is not None else None
    except SetupError as exc:
        plan.error = [exc.layer, str(exc)]
    except BaseException as exc:
        plan.error = ["sandboxee", f"{type(exc).__name__}: {exc}"[:4000]]
    held: list[int] = []
    if ctx is not None and plan.error is None:
        for name in _FD_NAMES:
            fd = getattr(ctx, name)
            if fd is not None and fd >= 0:
                plan.fds.append(name)
                held.append(fd)
        plan.context = pickle.dumps(_lean(ctx), protocol=pickle.HIGHEST_PROTOCOL)
        plan.policy_key = list(policy_key(ctx.policy, bool(ctx.seccomp_program)))
    plan.env = dict(os.environ)
    socket.send_fds(sock, [protocol.plan_to_bytes(plan)], held)


def _lean(ctx: ContainContext) -> ContainContext:
    """`ctx` without what only the setup child needed: the filesystem rules and plan
    (the ruleset is built), the mount table, the syscall lists once the seccomp
    program is compiled (else PID 1 compiles it, and fails the same way); with the
    child's memtrace marks among its timings."""
    timings = {**ctx.timings, **{k: v for k, v in memtrace.MARKS.items()
                                 if k.startswith("mem.setup.")}}
    # the policy goes as its key (`policy_key`): PID 1 takes the template's Policy
    return dataclasses.replace(ctx, policy=None,  # type: ignore[arg-type]
                               fs_plan=FsPlan(), mount_table=None,
                               paths=RunPaths("", ctx.paths.workdir, "", ""),
                               timings=timings, rlimit_pid=0)


_FS = sys.getfilesystemencoding()
PolicyKey = tuple[bool, str, str, str, tuple[str, ...], tuple[str, ...]]
_POLICIES: dict[PolicyKey, Policy] = {}   # made in the template (`warm_policy`)


def policy_key(policy: Policy, compiled: bool) -> PolicyKey:
    """What PID 1's layers read of the policy: best_effort (contain's `_apply`), the
    network mode and the syscall profile and action (seccomp), and the syscall lists
    when the program is not compiled (PID 1 compiles it then, and fails the same
    way). Each object PID 1 made of a whole policy was a page of the program's."""
    calls = policy.syscalls
    return (policy.best_effort, policy.network.mode, calls.profile, calls.on_violation,
            () if compiled else calls.allow, () if compiled else calls.deny)


def policy_of(key: Sequence[Any]) -> Policy:
    """The policy of `key`: the template's (`warm_policy`), else one made now."""
    be, mode, profile, action, allow, deny = key
    whole: PolicyKey = (bool(be), str(mode), str(profile), str(action), tuple(allow),
                        tuple(deny))
    got = _POLICIES.get(whole)
    if got is None:
        got = Policy(best_effort=whole[0], network=NetworkPolicy(mode=whole[1]),
                     syscalls=SyscallPolicy(profile=whole[2], on_violation=whole[3],
                                            allow=whole[4], deny=whole[5]))
    return got


def warm_policy(policy: Policy) -> None:
    """In the template: the policy PID 1 takes for `policy`, with and without
    best_effort, its program compiled (sandbox/sandboxee/template.py)."""
    for be in (False, True):
        key = policy_key(dataclasses.replace(policy, best_effort=be), True)
        _POLICIES.setdefault(key, policy_of(key))


_OLD_ENVIRON: list[object] = []   # the template's, kept: freeing it writes its pages


def replace_environ(env: dict[str, str]) -> None:
    """`os.environ` and the C environment become `env`. Not `os.environ.clear()` and
    `update`: clearing pops and frees each of the template's entries, a write to each
    of their pages, and runs the mapping's Python methods once per variable; this
    sets the C environment in one call (`libc.set_environ`) and swaps the mapping's
    dict, keeping the old one alive."""
    data: dict[bytes, bytes] = {}
    for key, value in env.items():
        # os.environ's own encoding (os.fsencode's), without its Python function
        data[key.encode(_FS, "surrogateescape")] = value.encode(_FS, "surrogateescape")
    libc.set_environ([k + b"=" + v for k, v in data.items()])
    _OLD_ENVIRON.append(getattr(os.environ, "_data"))
    setattr(os.environ, "_data", data)


def _context(plan: Pid1Plan, held: list[int], keep: tuple[int, ...]) -> ContainContext:
    """PID 1's context for the per-process layers, from the plan: its environment, its
    working directory, the descriptors the child made."""
    replace_environ(plan.env)
    ctx = pickle.loads(plan.context)
    if not isinstance(ctx, ContainContext):
        raise ProtocolError("pid1 plan: no containment context")
    ctx.policy = policy_of(plan.policy_key)
    ctx.keep_fds = keep
    for name, fd in zip(plan.fds, held):
        if name not in _FD_NAMES:
            os.close(fd)
            continue
        setattr(ctx, name, fd)
        if name in ("init_fd", "scratch_fd", "shm_fd", "landlock_ruleset"):
            ctx.keep_fds = (*ctx.keep_fds, fd)
    for fd in held[len(plan.fds):]:
        os.close(fd)
    if "mounts" in ctx.active:
        # pivot_root moved this process's root, not its working directory
        os.chdir("/")
        try:
            os.chdir(ctx.paths.workdir)
        except OSError:
            pass   # not in the view: stay at /, as mounts.enter_view does
    return ctx
