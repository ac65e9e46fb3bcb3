"""The typed internal protocol (sandbox.protocol): one codec for every message between
the launcher, the fork server, the monitor, the stub and PID 1.

Judged on the receiving side: whatever bytes and descriptors arrive, a receiver gets
exactly one of the messages it named, or a ProtocolError, and no descriptor leaks.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import pathlib
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import protocol as P
from sandbox.errors import ProtocolError

SETTINGS = settings(derandomize=True, max_examples=300, deadline=None)
DATAGRAM_TYPES = [P.SpawnRequest, P.Spawned, P.Refused, P.StubReady,
                  P.Pid1Exited, P.ListenerAt, P.Ack, P.OutputFd, P.CowFd, P.ScratchFd, P.Ready,
                  P.SetupFailure, P.ExecError]


def test_every_message_has_a_name_and_a_static_bound():
    assert set(P.NAMES) == set(P.MESSAGES.values())
    for cls in P.MESSAGES.values():
        assert P.max_size(cls) > 0
    for cls in DATAGRAM_TYPES:   # each fits one datagram whatever its contents
        assert P.max_size(cls) + 64 <= P.DATAGRAM_MAX, cls


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats()
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=20)


@SETTINGS
@given(st.sampled_from(sorted(P.MESSAGES)), json_values)
def test_a_hostile_envelope_is_a_message_or_a_protocol_error(name, payload):
    data = json.dumps({"type": name, "payload": payload}).encode()
    for accept in (tuple(P.MESSAGES.values()), (P.MESSAGES[name],)):
        try:
            msg = P.from_datagram(data, *accept)
        except ProtocolError:
            continue
        assert type(msg) is P.MESSAGES[name]


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_protocol_error(data):
    try:
        msg = P.from_datagram(data, *P.MESSAGES.values())
    except ProtocolError:
        return
    assert type(msg) in P.NAMES


def _instances(cls):
    return st.builds(cls) if not dataclasses.fields(cls) else st.builds(
        cls, **{f.name: st.from_type(_hint(cls, f.name)) for f in dataclasses.fields(cls)
                if _simple(_hint(cls, f.name))})


def _hint(cls, name):
    import typing
    return typing.get_type_hints(cls)[name]


def _simple(tp):
    return tp in (int, str, bool, float) or str(tp).startswith(("list[str]", "dict[str, str]"))


@SETTINGS
@given(st.sampled_from(DATAGRAM_TYPES).flatmap(_instances))
def test_a_message_round_trips_or_is_refused_whole(msg):
    """No message but the exit report is ever clipped: over a bound, encode refuses."""
    try:
        data = P.to_datagram(msg)
    except ProtocolError:
        return
    assert P.from_datagram(data, type(msg)) == msg


def test_a_spec_is_never_cut_short():
    spec = P.Spec(run_id="r", argv=["x"], env={"A": "v" * (1 << 18)})
    with pytest.raises(ProtocolError, match=r"env\{\}: 262144 characters, over its 131072 "
                                            r"\(refused whole, never cut short\)"):
        P.to_frame(spec, P.SPEC_MAX)
    spec.env = {"A": "v"}
    frame = P.to_frame(spec, P.SPEC_MAX)
    from sandbox.ipc.frames import FrameDecoder
    (m,) = FrameDecoder(P.SPEC_MAX).feed(frame)
    assert P.parse(m.type, m.payload, P.Spec) == spec


def test_field_types_are_resolved_once_at_import(monkeypatch):
    # issue 14: a process forked from the warm template decodes its Spec without
    # evaluating annotations again (each evaluation copies template pages)
    import typing

    def refuse(*a, **k):
        raise AssertionError("typing.get_type_hints called after import")
    monkeypatch.setattr(typing, "get_type_hints", refuse)
    spec = P.Spec(run_id="r", argv=["x"], env={"A": "v"})
    assert P.from_datagram(P.to_datagram(spec), P.Spec) == spec
    for cls in P.MESSAGES.values():
        P.max_size(cls)


def test_a_receiver_takes_only_what_it_names():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    P.send(a, P.StubReady(ok=True, pid1=5))
    with pytest.raises(ProtocolError, match="unexpected message 'stub_ready'"):
        P.recv(b, P.Ready)
    P.send(a, P.Ready(active=["x"]))
    assert P.recv(b, P.Ready) == (P.Ready(active=["x"]), [])
    a.close()
    assert P.recv(b, P.Ready) == (None, [])
    b.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("data", [b"", b"garbage", b'{"type": "ready", "payload": 3}',
                                  b'{"type": "exit", "payload": {}}'])
def test_descriptors_beside_a_refused_message_are_closed(data):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    before = _open_fds()
    r, w = os.pipe()
    socket.send_fds(a, [data], [r, w, r, w])
    os.close(r), os.close(w)
    with pytest.raises(ProtocolError):
        P.recv(b, P.Ready, P.OutputFd)
    assert _open_fds() == before
    socket.send_fds(a, [P.to_datagram(P.OutputFd())], [0, 1, 2])   # over max_fds=2
    with pytest.raises(ProtocolError, match="truncated"):
        P.recv(b, P.OutputFd, max_fds=2)
    assert _open_fds() == before
    a.close(), b.close()


def _imports_of(path: pathlib.Path, package: str) -> set[str]:
    """Every sandbox.monitor module `path` imports, at module level or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == package:
                out |= {f"{package}.{a.name}" for a in node.names}
            elif node.module.startswith(package + "."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(package + ".")}
    return out


def test_no_import_cycle_in_the_monitor_package():
    """Issue 14: no module of monitor/ imports another that imports it back (main <->
    supervisor <-> spare was one), directly or through others, lazily or not."""
    import sandbox.monitor
    root = pathlib.Path(sandbox.monitor.__file__).parent
    graph = {f"sandbox.monitor.{p.stem}": _imports_of(p, "sandbox.monitor")
             for p in root.glob("*.py") if p.stem != "__init__"}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        return seen
    cycles = sorted(m for m in graph if m in reach(m))
    assert not cycles, cycles


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=2**31 - 1))
def test_the_zygotes_raw_forked_answer_is_the_codecs(pid):
    """The zygote formats its `Forked` answer without the codec (its loop must write few
    pages); the host decodes it with the codec: the two must never drift apart."""
    from sandbox import protocol
    assert protocol.forked_datagram(pid) == protocol.to_datagram(protocol.Forked(pid))
    assert protocol.from_datagram(protocol.forked_datagram(pid), protocol.Forked) == \
        protocol.Forked(pid)


def _codec_or_error(decode, data):
    try:
        return decode(data)
    except ProtocolError:
        return "refused"


_fork_stub_payloads = st.fixed_dictionaries(
    {"namespaces": st.one_of(st.booleans(), st.integers(0, 1), st.none()),
     "network": st.one_of(st.booleans(), st.just("yes")),
     "cgroup_procs": st.one_of(
         st.lists(st.text(max_size=8) | st.just("x" * 4097) | st.integers(), max_size=18),
         st.lists(st.text(max_size=4), min_size=15, max_size=18),
         st.just("not a list"))},
    optional={"extra": st.integers()})


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.one_of(
    st.builds(P.ForkStub, namespaces=st.booleans(), network=st.booleans(),
              cgroup_procs=st.lists(st.text(max_size=64), max_size=16)).map(P.to_datagram),
    st.tuples(st.sampled_from(["fork_stub", "forked", 3]), _fork_stub_payloads).map(
        lambda tp: json.dumps({"type": tp[0], "payload": tp[1]}).encode()),
    _fork_stub_payloads.map(lambda p: json.dumps(p).encode()),
    st.binary(max_size=64)))
def test_the_stubs_own_fork_stub_decoder_is_the_codecs(data):
    """The new stub reads its request without the typed codec (the pages its Python
    writes are its Python action's): it takes what the codec takes, equal, and refuses
    what the codec refuses."""
    assert _codec_or_error(P.fork_stub_from_datagram, data) == \
        _codec_or_error(lambda d: P.from_datagram(d, P.ForkStub), data)


def test_the_stubs_fork_stub_decoder_keeps_the_codecs_bounds():
    """At the bounds: 16 cgroups of 4096 characters are taken by both, one more cgroup
    or one more character refused by both."""
    def raw(procs):
        return json.dumps({"type": "fork_stub", "payload": {
            "namespaces": True, "network": False, "cgroup_procs": procs}}).encode()
    for procs in (["p" * 4096] * 16, ["p"] * 17, ["p" * 4097], [1], ["p"] * 16):
        assert _codec_or_error(P.fork_stub_from_datagram, raw(procs)) == \
            _codec_or_error(lambda d: P.from_datagram(d, P.ForkStub), raw(procs)), procs


@settings(derandomize=True, max_examples=100, deadline=None)
@given(st.integers(min_value=-1, max_value=2**31 - 1))
def test_pid1s_fixed_form_messages_are_the_codecs(fd):
    """PID 1 sends the listener's place and the descriptors' messages, and checks the
    monitor's Ack, without the codec (protocol.FD_DATAGRAMS): the same bytes."""
    assert P.listener_datagram(fd) == P.to_datagram(P.ListenerAt(fd))
    for cls, data in P.FD_DATAGRAMS.items():
        assert P.from_datagram(data, cls) == cls()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        for msg, ok in ((P.Ack(ok=True), True), (P.Ack(ok=False), False),
                        (P.Ready(), False)):
            P.send(a, msg)
            assert P.recv_ack_ok(b) is ok
        r, w = os.pipe()
        P.send(a, P.Ack(ok=True), [r])   # a descriptor beside it: refused, and closed
        os.close(r)
        assert P.recv_ack_ok(b) is False
        os.close(w)


_texts = st.text(max_size=8) | st.just("é") | st.just("x" * 65) | st.just("y" * 513)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(_texts, max_size=34), st.dictionaries(_texts, _texts, max_size=17),
       st.dictionaries(_texts, st.floats() | st.integers(-3, 3), max_size=34))
def test_pid1s_ready_without_the_codec_is_the_codecs(active, skipped, timings):
    """PID 1's Ready (protocol.ready_datagram): the codec's bytes, or its refusal."""
    assert _codec_or_error(lambda _: P.ready_datagram(active, skipped, timings), b"") == \
        _codec_or_error(lambda _: P.to_datagram(P.Ready(active=list(active),
                                                        skipped=dict(skipped),
                                                        timings=dict(timings))), b"")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6),
       st.dictionaries(st.sampled_from(["A", "B_1", "LC_ALL"]), st.binary(max_size=40)),
       st.binary(min_size=1, max_size=60))
def test_arguments_environment_and_directory_bytes_survive_the_spec(args, env, cwd):
    """Not UTF-8, an argument, an environment value or the working directory reached the
    program as the text `\\udcff` (backslashreplace): `printf %s $'a\\xffb'` printed
    `a\\udcffb` and exited 0. Now every byte string survives the spec's encoding."""
    from sandbox.protocol import Spec, decode, encode
    fs = os.fsdecode
    spec = Spec(argv=[fs(a) for a in args], env={k: fs(v) for k, v in env.items()},
                audit_db=fs(b"/" + cwd.replace(b"\0", b"")))
    back = decode(Spec, encode(spec))
    assert [os.fsencode(a) for a in back.argv or ()] == args
    assert {k: os.fsencode(v) for k, v in back.env.items()} == env
    assert os.fsencode(back.audit_db) == b"/" + cwd.replace(b"\0", b"")
