"""Several runs' seccomp listeners on ONE notification hub, in this process.

Today each run's monitor is a process of its own; issue 14 puts every run of a
launcher under one. This harness makes that situation now: each `HubRun` is a
forked child that installs the real seccomp layer of its policy (the same
`seccomp.apply` PID 1 runs) and hands its listener over; the run's real
`AuditLoop` (engine, paths, store) is attached to a hub shared with the others,
with a stand-in for the Supervisor's few fields.
"""
from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace
from typing import Any, Callable

from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.policy.model import AuditPolicy, NetworkPolicy, Policy
from sandbox.policy.plan import FsPlan


def audit_policy(files: str = "all") -> Policy:
    # network "host": nothing about sockets is mediated (the child sends its listener)
    return Policy(audit=AuditPolicy(files=files), network=NetworkPolicy(mode="host"))


def guarded_policy(tree: str) -> tuple[Policy, FsPlan]:
    """`tree` writable with a deny rule inside it: every open there is brokered."""
    from sandbox.policy.model import FilesystemPolicy
    from sandbox.policy.planner import build_plan
    pol = Policy(filesystem=FilesystemPolicy(read=("/",), write=(tree,), exec=("/",),
                                             deny=(f"{tree}/*.pem",)),
                 audit=AuditPolicy(files="all"), network=NetworkPolicy(mode="host"))
    return pol, build_plan(pol)


class FakeSupervisor:
    """What AuditLoop reads of the Supervisor, and what it calls back."""

    def __init__(self, policy: Policy, run_id: str, db: str,
                 fs_plan: FsPlan | None = None) -> None:
        self.spec = SimpleNamespace(run_id=run_id, audit_db=db, argv=["harness"], mode="exec",
                                    paths=SimpleNamespace(workdir="/", output="/"),
                                    audit_max_bytes=None)
        self.ctx = ContainContext(policy=policy, paths=RunPaths("/", "/", "/", "/tmp"),
                                  fs_plan=fs_plan or FsPlan(), ipc_fd=-1, monitor_fd=-1,
                                  audit_files=policy.audit.files)
        self.pid1: int | None = None
        self.violations: list[Any] = []
        self.over_budget = False

    def on_violation(self, v: Any) -> None:
        self.violations.append(v)

    def on_monitor_budget(self) -> None:
        self.over_budget = True


class HubRun:
    """A forked child under the seccomp layer of `policy`; `body()` runs after `go()`."""

    def __init__(self, hub: Any, policy: Policy, run_id: str, db: str,
                 body: Callable[[], None], fs_plan: FsPlan | None = None) -> None:
        from sandbox.isolation import seccomp
        from sandbox.monitor import notify_loop
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:   # pragma: no cover - the child
            code = 0
            try:
                ours.close()
                ctx = ContainContext(policy=policy, paths=RunPaths("/", "/", "/", "/tmp"),
                                     fs_plan=FsPlan(), ipc_fd=-1, monitor_fd=-1,
                                     audit_files=policy.audit.files)
                import prctl
                prctl.set_no_new_privs(1)
                seccomp.apply(ctx)
                socket.send_fds(theirs, [b"L"], [ctx.listener_fd])
                os.close(ctx.listener_fd)
                theirs.recv(1)
                body()
            except BaseException:
                code = 70
            os._exit(code)
        theirs.close()
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        self.pid, self.sock = pid, ours
        self.sup = FakeSupervisor(policy, run_id, db, fs_plan)
        self.sup.pid1 = pid
        self.loop = notify_loop.prepare(self.sup)
        self.loop.attach(fds[0], hub=hub)

    def go(self) -> None:
        self.sock.sendall(b"g")

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        import signal
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self) -> tuple[Any, Any]:
        out = self.loop.finish()
        self.sock.close()
        return out


def records(db: str, run_id: str) -> list[dict[str, Any]]:
    from sandbox.audit import store
    st = store.connect(db)
    try:
        return list(store.records(st, run_id))
    finally:
        st.close()


HANG_GUARD = 120.0     # seconds: only to turn a starved run into a failure, not a hang


def until(cond: Callable[[], object], what: str) -> None:
    """Wait for `cond`; fail with `what` after HANG_GUARD seconds."""
    deadline = time.monotonic() + HANG_GUARD
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def wait_exit(run: "HubRun", others: list["HubRun"]) -> int:
    """`run`'s exit code; after HANG_GUARD seconds every run is killed and the test fails."""
    import pytest
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        pid, status = os.waitpid(run.pid, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for r in [run, *others]:
        r.kill()
    pytest.fail(f"run {run.sup.spec.run_id} starved: not done after {HANG_GUARD} s")


def end_flood(flooder: "HubRun", victim: "HubRun | None") -> None:
    """A fairness test's teardown: the flooder killed and waited for, and the victim
    killed if the hub has not finished with it."""
    flooder.kill()
    flooder.wait()
    if victim is not None and not victim.loop.hub_done.is_set():
        victim.kill()
