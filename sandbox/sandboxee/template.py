"""The sandboxee's share of the warm template: work done once, before the zygote forks.

A Python action's program (PID 2) is a fork of PID 1, a fork of the stub, a
fork of the zygote: every page of the template that one of them *writes* is
copied, and once the stub and PID 1 have exec'd the compiled init the copies
are PID 2's own (docs/benchmarks-journal.md, "Where a Python action's program memory
comes from"). CPython 3.11 writes a page for almost anything it does: a
reference count on each object touched, a warm-up counter and specialised
instructions in each code object run, a lazy cache filled on first use, an
allocation into a free block of a template pool. So whatever every sandbox
computes the same way is computed here, in the template, where its writes are
shared by every fork:

- `warm`: the parent's user namespace caps (read from /proc once, not per stub),
  the Landlock ABI, each built-in policy's seccomp program, a rehearsal of the
  pure Python every stub and PID 1 run (`rehearse`), and of a Python action's
  worker on a no-op action (`rehearse_worker`), and the import system's listing
  of every directory of the runtime (`warm_finders`);
- `plug_free_blocks`: the allocator's free blocks filled, so that a fork's new
  objects go to fresh, dense pools rather than one free block in each of
  hundreds of the template's pages; `plug_heap`: the same for the C heap
  (glibc's malloc, which takes Python's larger objects and every C library's).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.isolation.context import ContainContext


def warm() -> None:
    """In the fork server's template, before the zygote forks (monitor.preload.warm)."""
    from sandbox.isolation import landlock, limits
    limits.warm_user_ns_caps()
    landlock.abi_version()
    _compile_filters()
    rehearse()
    warm_finders()


def warm_finders() -> None:
    """A filled `FileFinder` in `sys.path_importer_cache` for every package directory of
    the runtime, as the template already holds for the directories it imported from.

    A Python action that imports a module of the runtime the template did not (the
    benchmarks' and demos' actions: `sandbox.bench.actions`) otherwise makes the
    finder of that directory in PID 2: an `isdir` stat by the path hook and the
    directory's listing (an `openat`), each a seccomp notification the monitor
    answers under an auditing policy. A warm finder still stats the directory
    before each lookup and lists it again when its mtime changed, as Python does;
    only the first listing moves here. The action's own calls are unchanged: it
    never made these (the worker's import machinery did)."""
    import importlib.machinery
    import sys
    import sandbox
    for root in sandbox.__path__:
        for here, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            if "__init__.py" not in files or here in sys.path_importer_cache:
                continue
            finder = importlib.machinery.PathFinder._path_importer_cache(here)  # type: ignore[attr-defined]
            if finder is not None:
                finder.find_spec("-")   # no such module: stats and lists the directory now


def _compile_filters() -> None:
    """The seccomp program of each built-in policy, as its PID 1 asks for it: with the
    policy's own network mode (the notify set depends on it), for each audit level.
    A miss compiles in PID 1: ~1 ms and ~300 KiB of its pages, PID 2's then."""
    try:
        from sandbox.isolation import seccomp
        from sandbox.policy import load_policy
        for name in ("default", "strict"):
            pol = load_policy(name)
            for network in {pol.network.mode, "host"}:
                for audit in ("none", "denied", "all"):
                    seccomp.warm(pol.syscalls, audit, network)
    except Exception:
        pass  # a cold cache is slower, never wrong


def rehearse() -> None:
    """Run, in the template, the pure Python a stub and PID 1 run for every sandbox:
    take a `Pid1Start` (and decode the zygote's `ForkStub`), its containment context, for
    the built-in policies; enough times that CPython 3.11 has specialised the code.
    Nothing here touches the kernel: it only leaves code objects and caches warm."""
    try:
        from sandbox import protocol
        from sandbox.monitor import runspec
        from sandbox.policy import build_plan, default_variables, load_policy, resolve
        for name in ("default", "strict"):
            pol = resolve(load_policy(name), default_variables("/", "/"))
            plan = build_plan(pol)
            spec = protocol.Spec(run_id="rehearsal", mode="workflow", env={"PATH": "/bin"},
                                 policy=pol.to_dict(), fs_plan=plan.to_dict(), ipc_fd=3)
            start = protocol.start_to_bytes(runspec.pid1_start(spec, runspec.build_context(spec)))
            req = protocol.to_datagram(protocol.ForkStub(cgroup_procs=["/x/cgroup.procs"]))
            for _ in range(10):
                got = protocol.start_from_bytes(start)
                _, ctx = runspec.from_start(got.context, 3, 4, 5)
                protocol.from_datagram(req, protocol.ForkStub)
                protocol.fork_stub_from_datagram(req)
                protocol.to_datagram(protocol.StubReady(ok=True))
                protocol.to_datagram(protocol.Forked(1))
                _rehearse_pid1(ctx)
    except Exception:
        pass  # an unrehearsed path costs pages, never correctness
    try:
        for _ in range(10):
            rehearse_worker()
    except Exception:
        pass


def _rehearse_pid1(ctx: "ContainContext") -> None:
    """What a Python action's PID 1 decodes and encodes (sandbox/sandboxee/planned.py,
    entry.report): the setup child's plan with its pickled context, the messages to
    the monitor."""
    import pickle
    from sandbox import protocol
    from sandbox.sandboxee import planned
    planned.warm_policy(ctx.policy)
    lean = planned._lean(ctx)
    plan = protocol.Pid1Plan(env={"PATH": "/bin"}, fds=["init_fd"],
                             context=pickle.dumps(lean, protocol=pickle.HIGHEST_PROTOCOL),
                             policy_key=list(planned.policy_key(ctx.policy, True)))
    got = protocol.plan_from_bytes(protocol.plan_to_bytes(plan))
    pickle.loads(got.context)
    planned.policy_of(got.policy_key)
    for msg in (protocol.ListenerAt(3), protocol.OutputFd(), protocol.ScratchFd(),
                protocol.ShmFd(), protocol.StubReady(ok=True, pid1=2),
                protocol.Ready(active=["namespaces", "mounts", "network:none", "limits",
                                       "privileges", "landlock:abi6", "seccomp:default"],
                               skipped={}, timings={"namespaces": 0.001, "limits": 0.001})):
        protocol.to_datagram(msg)
    protocol.from_datagram(protocol.to_datagram(protocol.Ack(ok=True)), protocol.Ack)


def rehearse_worker() -> None:
    """One no-op action through a Python action's worker (`worker.run`, what PID 2 runs),
    over a socketpair, resolved in a registry of its own: the default registry, the
    one user actions register in, is left as it was. Runs no thread (the channel's
    writer starts only after 32 messages; this sends two) and restores
    `sys.dont_write_bytecode`, which the worker sets."""
    import socket
    import sys
    from sandbox.ipc.frames import encode
    from sandbox.sandboxee import worker
    from sandbox.workflow.registry import Registry
    reg = Registry()
    reg.register("rehearsal.noop", lambda ctx: None)
    ours, theirs = socket.socketpair()
    dont_write = sys.dont_write_bytecode
    try:
        ours.sendall(encode("start", {"workflow": {"name": "rehearsal", "stages": [
            {"actions": [{"name": "rehearsal.noop"}]}]}}))
        worker.run(theirs.detach(), reg)
        while ours.recv(1 << 16):
            pass
    finally:
        sys.dont_write_bytecode = dont_write
        ours.close()


_BALLAST: list[object] = []


def _avail_blocks() -> dict[int, int]:
    """pymalloc's free blocks by size class, from `sys._debugmallocstats` (which writes
    to descriptor 2: taken through a pipe; its ~4 KiB fit the pipe's buffer)."""
    import sys
    r, w = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(w, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(w)
    try:
        out = os.read(r, 1 << 16)
    finally:
        os.close(r)
    got: dict[int, int] = {}
    for line in out.split(b"\n"):
        f = line.split()
        if len(f) == 5 and f[0].isdigit() and f[1].isdigit():
            got[int(f[1])] = int(f[4])
    return got


def plug_free_blocks(rounds: int = 3) -> None:
    """Fill the template allocator's free blocks with objects kept for its life."""
    if not _BALLAST:
        _BALLAST.extend([None] * 65536)
    i = 0
    for _ in range(rounds):
        for size, n in _avail_blocks().items():
            end = min(i + n, len(_BALLAST))
            while i < end:
                _BALLAST[i] = object() if size == 16 else bytes(max(2, size - 33))
                i += 1


# Chunk sizes the C heap's plug asks for, largest first: each request of a size class
# takes a free chunk of that class, or splits a larger one (what is left goes back to
# the bins for the smaller classes after it); glibc's bins are 16 bytes apart.
_HEAP_SIZES = (4072, 2024, 1000, *range(1000 - 16, 8, -16))
_TCACHE = 7     # glibc keeps up to 7 freed chunks per size class ahead of its bins


def plug_heap(rounds: int = 3) -> int:
    """Fill the C heap's free chunks below its top with blocks held for the template's
    life; returns the free bytes left there (-1 without glibc's mallinfo2).

    Why: a fork's first malloc of a size takes the template's free chunk of that size,
    somewhere in its ~4 MiB heap, and writing the chunk copies its page: twelve
    `setenv` in a fork of the template copied ~210 KiB, one or two pages each. Once
    the free chunks are held, a fork's mallocs are carved from the top chunk, side by
    side: the same twelve copy ~85 KiB (docs/benchmarks-journal.md). Each size class is asked
    for until a request no longer shrinks the free bytes below the top (it came from
    the top chunk): first `_TCACHE` times regardless, since glibc's per-size caches
    hold freed chunks that its counts report as in use."""
    from sandbox.isolation import libc
    free = libc.heap_free_below_top()
    if free is None:
        return -1
    for _ in range(rounds):   # (a malloc made meanwhile may free a little: go again)
        start = free
        for size in _HEAP_SIZES:
            for _ in range(_TCACHE):
                libc.malloc_hold(size)
            free = libc.heap_free_below_top() or 0
            while free > 0:
                libc.malloc_hold(size)
                now = libc.heap_free_below_top() or 0
                if now >= free:
                    break
                free = now
        if free >= start:
            break
    return free
