"""The compiled stub (sandbox/_native/stub_fork.c): it reads a request as the Python stub
does or not at all, fails as the Python stub failed, and is what the zygote runs.

The request comes from the monitor host, which is trusted; still, the C reader is a
second reader of one message, so it must never read a request differently from
`protocol.fork_stub_from_datagram`: whatever it accepts, Python accepts with the
same fields (a property over the codec's output and over mangled bytes), and the
host's real requests (cgroup paths) are accepted, so the compiled path is the one
that runs.
"""
from __future__ import annotations

import ctypes
import os
import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.protocol import ForkStub, SetupFailure, StubReady
from sandbox.sandboxee import stub_fork

pytestmark = pytest.mark.skipif(not os.path.exists(stub_fork.LIB_PATH),
                                reason="libstub_fork.so is not built (setup.py build_native)")


def _lib():
    lib = ctypes.CDLL(stub_fork.LIB_PATH)
    lib.sf_read.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return lib


def c_read(data: bytes) -> ForkStub | None:
    """The request as the C stub reads it, None when it would hand it back to Python."""
    out = ctypes.create_string_buffer(16 * 4097 + 2)
    n = _lib().sf_read(data, len(data), out, len(out))
    if n < 0:
        return None
    raw = out.raw[:n]
    procs = [p.decode() for p in raw[2:].split(b"\0")[:-1]]
    return ForkStub(namespaces=raw[0:1] == b"1", network=raw[1:2] == b"1", cgroup_procs=procs)


def py_read(data: bytes) -> ForkStub | None:
    try:
        return protocol.fork_stub_from_datagram(data)
    except ProtocolError:
        return None


def test_the_library_is_of_this_api():
    assert _lib().sf_api() == stub_fork.API


def test_a_host_request_is_read_in_c():
    """What stubs.make sends for a run with cgroups: the compiled path takes it."""
    req = ForkStub(namespaces=True, network=False, cgroup_procs=[
        "/sys/fs/cgroup/memory/sandbox/run-0f3a/cgroup.procs",
        "/sys/fs/cgroup/unified/sandbox/run-0f3a/cgroup.procs"])
    assert c_read(protocol.to_datagram(req)) == req
    empty = ForkStub(namespaces=False, network=True, cgroup_procs=[])
    assert c_read(protocol.to_datagram(empty)) == empty


paths = st.text(st.characters(codec="utf-8"), max_size=40) | st.from_regex(
    r"/[a-z0-9/._-]{0,60}", fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.booleans(), st.lists(paths, max_size=16))
def test_c_reads_the_codecs_output_as_python_does_or_hands_it_back(ns, net, procs):
    data = protocol.to_datagram(ForkStub(namespaces=ns, network=net, cgroup_procs=procs))
    got = c_read(data)
    if got is not None:
        assert got == py_read(data), data
    if all(p and p.isascii() and p.isprintable() and '"' not in p and "\\" not in p
           for p in procs):   # nothing escaped: C reads it, so the compiled path runs
        assert got == ForkStub(namespaces=ns, network=net, cgroup_procs=procs)


def test_more_paths_than_a_request_holds_are_read_by_neither():
    data = protocol.to_datagram(ForkStub(cgroup_procs=["/a"])).replace(
        b'["/a"]', b"[" + b",".join([b'"/a"'] * 17) + b"]")
    assert c_read(data) is None and py_read(data) is None


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_whatever_c_accepts_of_mangled_bytes_python_accepts_the_same(data):
    """Inserted, removed and replaced bytes in a real request: the C reader never takes
    what the Python decoder refuses, nor reads other fields from it."""
    good = bytearray(protocol.to_datagram(ForkStub(
        namespaces=True, network=True, cgroup_procs=["/sys/fs/cgroup/a/cgroup.procs", "/b"])))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(good)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.sampled_from(b'"\\,[]{}:0aet \x00\x1f\xff'))
        if kind == "insert":
            good.insert(at, byte)
        elif at < len(good):
            if kind == "delete":
                del good[at]
            else:
                good[at] = byte
    got = c_read(bytes(good))
    if got is not None:
        assert got == py_read(bytes(good)), bytes(good)


def _zygote(compiled: str, monkeypatch):
    from sandbox.monitor.zygote import Zygote, Zygotes
    monkeypatch.setenv("SANDBOX_STUB_C", compiled)
    return Zygotes(Zygote.spawn(warm=False), warm=False)


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_a_cgroup_the_stub_cannot_join_fails_it_alike(compiled, monkeypatch, tmp_path):
    """A cgroup.procs that cannot be written: SetupFailure("cgroups") naming the pid and
    the directory, from the compiled stub as from the Python one; and the zygote runs
    the compiled stub unless told not to."""
    from sandbox.monitor import stubs
    zyg = _zygote(compiled, monkeypatch)
    try:
        missing = str(tmp_path / "no-such-cgroup")
        pre = stubs.make(zyg, types.SimpleNamespace(paths=[missing]))  # type: ignore[arg-type]
        try:
            msg, _ = protocol.recv(pre.status, StubReady, SetupFailure, max_fds=0)
        finally:
            pre.discard()
        assert msg == SetupFailure(
            "cgroups", f"cannot move pid {pre.stub_pid} into {missing}: "
                       "No such file or directory"), msg
        assert ("libstub_fork.so" in _maps(zyg.current.pid)) == (compiled == "1")
    finally:
        zyg.close()


@pytest.mark.isolation
@pytest.mark.parametrize("compiled", ["1", "0"])
def test_a_stub_enters_the_namespaces_and_forks_pid1(compiled, monkeypatch):
    """StubReady with PID 1's host pid; PID 1 is PID 1 of a new PID namespace, in a new
    user namespace with our uid mapped to itself, a child of the stub (the waiter)."""
    from sandbox.monitor import stubs
    zyg = _zygote(compiled, monkeypatch)
    try:
        pre = stubs.make(zyg, None)
        try:
            ready = pre.take_ready()
            assert ready is not None and ready.ok and ready.pid1 > 0, ready
            with open(f"/proc/{ready.pid1}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines())
            assert status["NSpid"].split()[-1] == "1", status["NSpid"]
            assert int(status["PPid"]) == pre.stub_pid
            uid = os.getuid()
            with open(f"/proc/{ready.pid1}/uid_map") as f:
                assert f.read().split() == [str(uid), str(uid), "1"]
            assert os.readlink(f"/proc/{ready.pid1}/ns/user") != os.readlink(
                "/proc/self/ns/user")
            deadline = time.monotonic() + 10   # StubReady comes just before the exec
            while not os.readlink(f"/proc/{pre.stub_pid}/exe").endswith("sandbox-init"):
                assert time.monotonic() < deadline, "the stub never became the waiter"
                time.sleep(0.01)
        finally:
            pre.discard()
    finally:
        zyg.close()


@pytest.mark.isolation
def test_a_burst_of_stubs_each_starts_whole(monkeypatch):
    """Requests back to back: the compiled stub runs in the zygote's memory on a stack of
    its own, so the zygote must not start the next one (nor run Python) before the
    last has exec'd. Each stub reports a PID 1 of its own; the zygote lives on."""
    from sandbox.monitor import stubs
    zyg = _zygote("1", monkeypatch)
    made = []
    try:
        made = [stubs.make(zyg, None) for _ in range(40)]
        ready = [pre.take_ready() for pre in made]
        assert all(r is not None and r.ok for r in ready), ready
        assert len({r.pid1 for r in ready if r is not None}) == len(made)
        assert zyg.current.death() is None
    finally:
        for pre in made:
            pre.discard()
        zyg.close()
