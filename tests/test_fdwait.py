"""Our processes wait on descriptors with poll(2), never select(2) (sandbox/fdwait.py).

`select.select` refuses a descriptor at or above FD_SETSIZE (1024), and a host with
50 runs alive holds descriptors past it: every run after the 50th failed with "the
monitor failed: ValueError: filedescriptor out of range in select()". These tests
put the descriptors the host waits on above 1024.
"""
from __future__ import annotations

import os
import resource
import socket

import pytest

from sandbox import protocol
from sandbox import fdwait
from sandbox.monitor.stubs import Prestarted

HIGH = 1500


@pytest.fixture
def high_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH + 16:
        pytest.fail(f"this test needs RLIMIT_NOFILE's hard limit above {HIGH + 16} (got {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH + 16), hard))
    made: list[int] = []

    def high(fd: int) -> int:
        new = os.dup2(fd, HIGH + len(made))
        made.append(new)
        return new
    yield high
    for fd in made:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_readable_takes_descriptors_past_fd_setsize(high_fds):
    r, w = os.pipe()
    try:
        hr = high_fds(r)
        assert not fdwait.readable([hr], 0)
        os.write(w, b"x")
        assert fdwait.readable([hr], 0)
        assert fdwait.readable([hr], None)
    finally:
        os.close(r)
        os.close(w)


def test_a_stub_with_high_descriptors_is_asked_whether_it_waits(high_fds):
    """What the host asks of a pooled stub before it serves a run (before: ValueError)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()   # stands for the stub's pidfd: readable once the stub exited
    try:
        status = socket.socket(fileno=high_fds(ours.fileno()))
        pre = Prestarted(stub_pid=0, stub_fd=high_fds(r), status=status, setup=ours, go=ours,
                         cgroup=None)
        assert pre.waiting()
        protocol.send(theirs, protocol.StubReady(ok=True))   # it spoke after StubReady
        assert not pre.waiting()
        status.detach()
    finally:
        for s in (ours, theirs):
            s.close()
        os.close(r)
        os.close(w)


def test_ready_answers_as_select_does(high_fds):
    """The objects given, in their order, for reading and for writing; a closed one is
    an error, as select's (the callers' handling of it stays right)."""
    a, b = socket.socketpair()
    try:
        hb = socket.socket(fileno=high_fds(b.fileno()))
        assert fdwait.ready([a, hb], [a, hb], 0) == ([], [a, hb])
        a.sendall(b"x")
        assert fdwait.ready([a, hb], (), 0) == ([hb], [])
        hb.detach()
        closed = socket.socket()
        closed.close()
        with pytest.raises(ValueError):
            fdwait.ready([closed], (), 0)
        r, w = os.pipe()
        os.close(r)
        with pytest.raises(OSError):
            fdwait.ready([r], (), 0)
        os.close(w)
    finally:
        a.close()
        b.close()


def test_no_process_of_ours_waits_with_select():
    """The class, not the instance: no module outside the benchmarks calls select.select."""
    import pathlib
    import sandbox
    root = pathlib.Path(sandbox.__file__).parent
    found = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if "bench" not in p.parts and "select.select(" in p.read_text()]
    assert found == [], found
