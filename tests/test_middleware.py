"""Middleware in-process: the order rule, drop, raise, HMAC, redaction, metrics, hooks."""
from __future__ import annotations

import pytest

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import FrameDecoder, Message, encode
from sandbox.middleware import (AuthError, Chain, HmacAuth, Hooks, Metrics, SpawnInfo,
                                SpawnRequest, build_chain, child, redaction, transform)
from sandbox.middleware.auth import ChildHmac
from sandbox.middleware.hooks import HookRefused
from sandbox.middleware.redact import Redactor
from sandbox.policy import load_policy


def tracer(name, trail):
    def out(t, p):
        trail.append(f"out:{name}")
        return t, {"w": name, "inner": p}

    def inn(t, p):
        trail.append(f"in:{name}")
        assert p["w"] == name, f"{name} asked to unwrap {p['w']}'s wrapping"
        return t, p["inner"]
    return transform(out, inn, name=name)


def test_first_registered_is_outermost_in_both_directions():
    trail = []
    chain = Chain([tracer("a", trail), tracer("b", trail), tracer("c", trail)])
    wire = chain.outbound(Message("x", 1))
    assert wire.payload == {"w": "c", "inner": {"w": "b", "inner": {"w": "a", "inner": 1}}}
    assert chain.inbound(wire).payload == 1
    assert trail == ["out:a", "out:b", "out:c", "in:c", "in:b", "in:a"]


def test_two_ends_built_from_the_same_registrations_compose():
    # the child's chain comes from specs; an encrypt/decrypt-like pair lines up by position
    specs = [None, {"factory": "sandbox.middleware.auth:child", "params": {"key": "ab" * 32}}]
    child_chain = build_chain(specs)
    parent_chain = Chain([Metrics(), HmacAuth(key=bytes.fromhex("ab" * 32))])
    signed = child_chain.outbound(Message("log", {"message": "hi"}))
    frame = encode(signed.type, signed.payload, **signed.extra)
    msg = FrameDecoder().feed(frame)[0]
    got = parent_chain.inbound(msg)
    assert got.payload == {"message": "hi"} and got.extra == {}


def test_a_middleware_may_drop_and_the_rest_of_the_chain_is_skipped():
    trail = []
    drop = transform(inbound=lambda t, p: None if t == "noise" else (t, p))
    chain = Chain([tracer("a", trail), drop])
    assert chain.inbound(Message("noise", {"w": "a", "inner": 1})) is None
    assert trail == []          # a is outer: it would have run after drop
    assert chain.inbound(Message("ok", {"w": "a", "inner": 1})).payload == 1


def test_a_raising_middleware_propagates_to_the_caller():
    def bad(t, p):
        raise RuntimeError("nope")
    with pytest.raises(RuntimeError):
        Chain([transform(inbound=bad)]).inbound(Message("x"))


def test_child_spec_middleware_is_identity_in_the_launcher():
    mw = child("mymod:factory", x=1)
    assert mw.child_spec() == {"factory": "mymod:factory", "params": {"x": 1}}
    assert mw.inbound(Message("x", 1)).payload == 1


def test_hmac_round_trip_and_tamper_replay_reflection_missing_mac():
    parent = HmacAuth()
    kid = ChildHmac(parent.child_spec()["params"]["key"])
    first = kid.outbound(Message("store_put", {"key": "k", "value": 1}))
    assert parent.inbound(first).payload == {"key": "k", "value": 1}
    tampered = kid.outbound(Message("store_put", {"key": "k", "value": 2}))
    tampered.payload["value"] = 3
    with pytest.raises(AuthError, match="MAC"):
        parent.inbound(tampered)
    with pytest.raises(AuthError, match="replayed"):
        parent.inbound(first)
    down = parent.outbound(Message("spawn_result", {"request_id": "r"}))
    assert kid.inbound(down).payload == {"request_id": "r"}
    with pytest.raises(AuthError):             # a launcher frame reflected back to it
        parent.inbound(down)
    with pytest.raises(ProtocolError, match="unauthenticated"):
        parent.inbound(Message("log", {}))
    other = HmacAuth()                         # every run has its own key
    with pytest.raises(AuthError):
        other.inbound(kid.outbound(Message("log", {})))


def test_hmac_survives_a_json_round_trip_of_typed_values():
    parent = HmacAuth()
    kid = ChildHmac(parent.child_spec()["params"]["key"])
    value = {"i": 1, "f": 1.5, "b": False, "s": "é", "n": None, "l": [1, [2.0, {"k": True}]]}
    msg = kid.outbound(Message("store_put", {"key": "v", "value": value}))
    wire = FrameDecoder().feed(encode(msg.type, msg.payload, **msg.extra))[0]
    got = parent.inbound(wire).payload["value"]
    assert got == value and type(got["l"][1][0]) is float


def test_redactor_scrubs_keys_values_and_text():
    r = Redactor(["password", "API_KEY"], values=["hunter2"])
    put = r.outbound(Message("store_put", {"key": "Password", "value": "x"}))
    assert put.payload == {"key": "Password", "value": "[REDACTED]"}
    nested = r.outbound(Message("store_put", {"key": "cfg", "value": {"api_key": 1, "u": "a"}}))
    assert nested.payload["value"] == {"api_key": "[REDACTED]", "u": "a"}
    log = r.outbound(Message("log", {"level": "INFO", "message": "password: 'abc' and hunter2",
                                     "api_key": "z"}))
    assert log.payload == {"level": "INFO", "api_key": "[REDACTED]",
                           "message": "password: [REDACTED] and [REDACTED]"}
    final = r.outbound(Message("final_store", {"store": {"password": "p", "k": 1},
                                               "changed": ["password"], "deleted": []}))
    assert final.payload["store"] == {"password": "[REDACTED]", "k": 1}
    req = Message("spawn_request", {"workflow": {"store": {"password": "p"}}})
    assert r.outbound(req).payload == req.payload      # the launcher needs it unchanged
    assert redaction(["password"]).child_spec()["factory"] == "sandbox.middleware.redact:child"


def test_metrics_counts_per_type_and_direction():
    m = Metrics(SpawnInfo("r"))
    m.inbound(Message("log", {}, size=30))
    m.inbound(Message("log", {}, size=12))
    m.outbound(Message("spawn_result", {"x": 1}))
    snap = m.snapshot()
    assert snap["messages"] == {"in": {"log": 2}, "out": {"spawn_result": 1}}
    assert snap["bytes"]["in"]["log"] == 42 and snap["bytes"]["out"]["spawn_result"] > 4


def test_hook_registration_is_idempotent_by_identity():
    hooks = Hooks()
    calls = []

    def fn(req):
        calls.append(1)

    class Obj:
        def meth(self, req):
            calls.append(2)
    o = Obj()
    for _ in range(3):
        hooks.add("before_spawn", fn)
        hooks.add("before_spawn", o.meth)     # a new bound-method object each time
    assert len(hooks.get("before_spawn")) == 2
    hooks.before(SpawnRequest(None, "workflow", load_policy("default"), SpawnInfo("r")))
    assert calls == [1, 2]
    assert hooks.remove(o.meth) and len(hooks.get("before_spawn")) == 1


def test_before_spawn_may_tighten_but_never_loosen():
    hooks = Hooks()
    default = load_policy("default")
    hooks.add("before_spawn", lambda req: setattr(req, "policy", load_policy("strict")))
    req = hooks.before(SpawnRequest(None, "workflow", default, SpawnInfo("r")))
    assert req.policy.name == "strict"
    loose = Hooks()
    loose.add("before_spawn", lambda req: setattr(
        req, "policy", req.policy.replace(network=req.policy.network.__class__(mode="host"))))
    with pytest.raises(HookRefused, match="network.mode"):
        loose.before(SpawnRequest(None, "workflow", default, SpawnInfo("r")))


def test_in_process_runner_has_no_spawn():
    from sandbox.workflow import Runner, action

    @action("t.mw.try_spawn")
    def try_spawn(ctx):
        ctx.spawn({"stages": []})
    out = Runner().run({"name": "x", "stages": [{"id": "s", "actions": ["t.mw.try_spawn"]}]})
    assert out.status == "error" and out.error["type"] == "RuntimeError"
