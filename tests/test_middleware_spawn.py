"""Middleware, hooks, handlers and bail across a real sandbox boundary."""
from __future__ import annotations

import os

import pytest

from sandbox.launcher.handlers import HandlerSet
from sandbox.launcher.launcher import Launcher
from sandbox.middleware import HmacAuth, Metrics, child, redaction, transform
from sandbox.policy import load_policy
from sandbox.workflow import Workflow

pytestmark = pytest.mark.isolation

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")


def wf(*actions, store=None):
    return Workflow.from_dict({"name": "mw", "imports": ["mw_actions"], "store": store or {},
                               "stages": [{"id": "s", "actions": list(actions)}]})


@pytest.fixture
def launcher():
    return Launcher(capture_output=True)


def spawn(launcher, workflow, **kw):
    kw.setdefault("code_paths", [CODE])
    return launcher.spawn(workflow, **kw)


def unwrapper(name):
    def inn(t, p):
        if not t.endswith(".wrapped"):
            return t, p
        if p["w"] != name:
            raise ValueError(f"{name} cannot unwrap {p['w']}'s wrapping")
        return p["type"], p["inner"]
    mw = transform(inbound=inn, name=name)
    mw._child = {"factory": "mw_actions:wrapper", "params": {"name": name}}
    return mw


def test_wrap_pairs_registered_once_compose_across_the_two_ends(launcher):
    launcher.use(unwrapper("a"))
    launcher.use(unwrapper("b"))
    seen = []
    launcher.on("custom.event", lambda m, i: seen.append(m.payload))
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "ok", (r.reason, r.error, r.rejected)
    assert r.rejected == [] and seen == [{"n": 1}]          # unwrapped b, then a
    assert r.store["answer"] == 42


def test_wrong_order_is_visible_as_rejected_messages(launcher):
    launcher.use(unwrapper("a"))
    b = unwrapper("b")
    b._child = {"factory": "mw_actions:wrapper", "params": {"name": "a"}}   # mismatched pair
    launcher.use(b)
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "ok"
    assert {x["message_type"] for x in r.rejected} == {"a.wrapped"}
    assert "custom.event" not in r.messages


def test_drop_and_raise_on_the_launcher_side(launcher):
    def inn(t, p):
        if t == "noise":
            return None
        if t == "custom.event":
            raise RuntimeError("refuse this one")
        return t, p
    launcher.use(transform(inbound=inn))
    got = []
    launcher.on("*", lambda m, i: got.append(m.type))
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "ok", (r.reason, r.error)
    assert "noise" not in got and "custom.event" not in got and "store_put" in got
    assert r.rejected == [{"message_type": "custom.event", "stage": "inbound",
                           "type": "RuntimeError", "message": "refuse this one"}]
    assert r.store["answer"] == 42                          # the reader went on


def test_child_side_middleware_configured_from_the_launcher_drops(launcher):
    launcher.use(Metrics)
    launcher.use(child("mw_actions:dropper", drop="noise"))
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "ok", (r.reason, r.error)
    assert "noise" not in r.messages and r.messages["custom.event"] == 1
    assert "noise" not in r.metrics["messages"]["in"]


def test_metrics_on_the_run_result(launcher):
    launcher.use(Metrics)
    r = spawn(launcher, wf("mw.chat"))
    m = r.metrics
    assert m["messages"]["in"]["log"] == 1 and m["messages"]["in"]["custom.event"] == 1
    assert m["messages"]["in"]["result"] == 1 and m["bytes"]["in"]["log"] > 0
    assert m["spawn_duration"] > 0 and m["first_message_after"] is not None


def test_redaction_happens_before_anything_leaves_the_child(launcher):
    launcher.use(redaction(["password", "api_key"], values=["hunter2"]))
    raw = []
    launcher.on_child_message(lambda m, i: raw.append(m.to_obj()))
    r = spawn(launcher, wf("mw.leak"))
    assert r.status == "ok", (r.reason, r.error)
    assert "hunter2" not in repr(raw) and "k-123" not in repr(raw)
    assert r.store["password"] == "[REDACTED]" and r.store["config"]["api_key"] == "[REDACTED]"
    assert r.store["config"]["n"] == 3 and r.store["note"] == "the secret is [REDACTED]"
    assert r.logs[0]["message"] == "connecting with password=[REDACTED] to db"


def test_hmac_authenticated_run(launcher):
    launcher.use(HmacAuth)
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "ok", (r.reason, r.error, r.rejected)
    assert r.metrics["auth"]["rejected"] == 0 and r.metrics["auth"]["verified"] >= 5


def test_hmac_rejects_a_tampered_frame_and_the_run_goes_on(launcher):
    launcher.use(HmacAuth)
    r = spawn(launcher, wf("mw.tamper"))
    assert r.status == "ok", (r.reason, r.error)
    assert [(x["message_type"], x["type"]) for x in r.rejected] == [("custom.evil", "AuthError")]
    assert "custom.evil" not in r.messages and r.messages["custom.after"] == 1
    assert r.metrics["auth"]["rejected"] == 1 and r.store["after_tamper"] is True


def test_an_unauthenticated_frame_when_auth_is_on_is_a_violation(launcher):
    launcher.use(HmacAuth)
    r = spawn(launcher, wf("mw.unauth"))
    assert r.status == "violation", (r.status, r.reason)
    assert "unauthenticated" in r.reason and r.violation["kind"] == "ipc"


def test_hooks_run_once_per_spawn_even_when_registered_twice(launcher):
    calls = []

    def before(req):
        calls.append(("before", req.info.depth))

    def after(result, info):
        calls.append(("after", result.status))
    for _ in range(2):
        launcher.before_spawn(before)
        launcher.after_spawn(after)
    spawn(launcher, wf("mw.chat"))
    spawn(launcher, wf("mw.chat"))
    assert calls == [("before", 0), ("after", "ok")] * 2
    assert launcher.remove_hook(before)
    spawn(launcher, wf("mw.chat"))
    assert calls[-1] == ("after", "ok") and calls.count(("before", 0)) == 2


def test_before_spawn_rewrites_the_workflow_and_tightens_the_policy(launcher):
    def before(req):
        d = req.target.to_dict()
        d["stages"][0]["actions"] = [{"name": "mw.put", "params": {"key": "k", "value": 7}}]
        req.target = d
        req.policy = load_policy("strict")
    launcher.before_spawn(before)
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "ok" and r.policy == "strict" and r.store == {"k": 7}


def test_a_loosening_hook_stops_the_spawn_and_after_spawn_still_runs(launcher):
    seen = []
    launcher.before_spawn(lambda req: setattr(req, "policy", req.policy.replace(
        network=req.policy.network.__class__(mode="host"))))
    launcher.after_spawn(lambda res, info: seen.append(res.status))
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "setup_error" and "network.mode" in r.reason and seen == ["setup_error"]


def test_after_spawn_sees_a_result_when_spawn_raises(launcher):
    seen = []
    launcher.after_spawn(lambda res, info: seen.append((res.status, res.reason)))
    with pytest.raises(Exception):
        launcher.spawn("not-a-workflow.txt")
    assert seen and seen[0][0] == "setup_error" and "InputError" in seen[0][1]


def test_a_raising_after_hook_is_reported_not_fatal(launcher):
    def bad(res, info):
        raise RuntimeError("hook bug")
    launcher.after_spawn(bad)
    r = spawn(launcher, wf("mw.chat"))
    assert r.status == "ok" and r.handler_errors[-1]["stage"] == "after_spawn"


def test_handlers_removed_by_id_in_both_scopes_even_mid_run(launcher):
    calls = {"launcher": 0, "run": 0}
    run_set = HandlerSet()

    def on_launcher(msg, info):
        calls["launcher"] += 1
        launcher.off(ids["launcher"])

    def on_run(msg, info):
        calls["run"] += 1
        run_set.remove(ids["run"])
    ids = {"launcher": launcher.on("*", on_launcher), "run": run_set.add("*", on_run)}
    r = spawn(launcher, wf("mw.chat"), handlers=run_set)
    assert r.status == "ok" and calls == {"launcher": 1, "run": 1}
    assert len(run_set) == 0 and len(launcher.handlers) == 0


def test_bail_ends_ok_with_reason_and_skips_the_rest(launcher):
    r = spawn(launcher, wf("mw.bail", "mw.after_bail"))
    assert (r.status, r.bailed, r.bail_reason) == ("ok", True, "nothing more to do")
    assert r.store == {"before_bail": 1}


def test_hmac_signs_text_that_is_not_utf8(launcher):
    """A name that is not UTF-8 reaches Python as a lone surrogate; the wire carries it
    as its JSON escape. HMAC's canonical form encoded it as strict UTF-8 and raised:
    under HmacAuth the honest action's log call failed in the child."""
    launcher.use(HmacAuth)
    r = spawn(launcher, wf("mw.undecodable"))
    assert r.status == "ok", (r.status, r.reason, r.error)
    assert r.store["file"] == os.fsdecode(b"report-\xff.txt")
    assert r.metrics["auth"]["rejected"] == 0, r.rejected


def test_hmac_nested_result_holding_text_that_is_not_utf8_reaches_the_waiting_action(launcher):
    """The launcher signs the spawn_result it sends; when signing raised, the reply was
    dropped and the action waited for it until the parent's wall limit."""
    launcher.use(HmacAuth)
    child = {"name": "c", "imports": ["mw_actions"],
             "stages": [{"id": "s", "actions": ["mw.undecodable"]}]}
    r = spawn(launcher, wf({"name": "mw.nest", "params": {"child": child}}), timeout=60)
    assert r.status == "ok", (r.status, r.reason, r.error)
    assert r.store["child_result"]["status"] == "ok", r.store["child_result"]


def test_a_spawn_result_that_cannot_be_sent_still_answers_the_waiting_action(launcher):
    """A launcher-side outbound middleware raising on the spawn_result dropped the
    reply: the action waited until the parent's wall limit (status timeout)."""
    def refuse_ok(t, p):
        if t == "spawn_result" and p["result"]["status"] == "ok":
            raise ValueError("this middleware refuses ok results")
        return t, p
    child = {"name": "c", "imports": ["mw_actions"],
             "stages": [{"id": "s", "actions": ["mw.chat"]}]}
    r = spawn(launcher, wf({"name": "mw.nest", "params": {"child": child}}),
              middleware=[transform(outbound=refuse_ok, name="refuse_ok")], timeout=20)
    assert r.status == "ok", (r.status, r.reason, r.error)
    got = r.store["child_result"]
    assert got["status"] == "error" and "refuses ok results" in got["reason"], got
