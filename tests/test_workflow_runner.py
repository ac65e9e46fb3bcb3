"""The in-process Runner: order, store precedence, middleware, bail, errors."""
from __future__ import annotations

import pytest

from sandbox.workflow import Registry, Runner, Store, Workflow


def wf(*stages, store=None, **top):
    """Workflow from (stage_id, [action names or (name, params)], stage_store?) tuples."""
    d = {"id": "w", "store": store or {}, "stages": []}
    for st in stages:
        sid, actions, *rest = st
        acts = [{"name": a} if isinstance(a, str) else {"name": a[0], "params": a[1]}
                for a in actions]
        d["stages"].append({"id": sid, "actions": acts, "store": rest[0] if rest else {}})
    d.update(top)
    return Workflow.from_dict(d)


@pytest.fixture
def reg():
    return Registry()


def test_stages_and_actions_run_in_order(reg):
    seen = []
    for n in ("a", "b", "c"):
        reg.register(n, lambda ctx, n=n: seen.append((ctx.stage, n, ctx.action)))
    out = Runner(reg).run(wf(("s1", ["a", "b"]), ("s2", ["c", "a"])))
    assert out.status == "ok" and out.ok and out.error is None and not out.bailed
    assert seen == [("s1", "a", "a"), ("s1", "b", "b"), ("s2", "c", "c"), ("s2", "a", "a")]


def test_store_precedence_and_ints_stay_ints(reg):
    @reg.action("probe")
    def probe(ctx):
        ctx.store.put(f"seen_{ctx.stage}", ctx.store.to_dict())
        return {"k": f"action-{ctx.stage}", "n": ctx.store.get_int("n") + 1}

    w = wf(("s1", ["probe"], {"k": "stage1", "only_stage": 1}), ("s2", ["probe"]),
           store={"k": "workflow", "default": 1, "n": 1})
    out = Runner(reg).run(w, store={"default": 2})
    seen1 = out.store["seen_s1"]
    assert seen1["default"] == 2                       # the caller's initial store beats workflow defaults
    assert seen1["k"] == "stage1"                      # the stage store beats the workflow store
    assert out.store["seen_s2"]["k"] == "action-s1"    # an action's put beats what came before
    assert out.store["n"] == 3 and type(out.store["n"]) is int
    assert out.changed == {"k", "n", "only_stage", "seen_s1", "seen_s2"}  # default was given
    assert out.deleted == set()


def test_action_return_value_must_be_mapping(reg):
    reg.register("bad", lambda ctx: 42)
    out = Runner(reg).run(wf(("s", ["bad"])))
    assert out.status == "error" and out.error["type"] == "TypeError"
    assert "return None or a dict" in out.error["message"]


def test_params_reach_the_action(reg):
    reg.register("p", lambda ctx: {"got": dict(ctx.params)})
    out = Runner(reg).run(wf(("s", [("p", {"n": 1, "l": [True]})])))
    assert out.store["got"] == {"n": 1, "l": [True]}


def test_error_in_stage1_stops_stage2(reg):
    ran = []

    @reg.action("fail")
    def fail(ctx):
        ctx.store.put("before", 1)
        raise ValueError("broken input")
    reg.register("later", lambda ctx: ran.append(ctx.stage))
    out = Runner(reg).run(wf(("s1", ["later", "fail", "later"]), ("s2", ["later"])))
    assert ran == ["s1"]
    assert out.status == "error" and not out.bailed
    err = out.error
    assert (err["type"], err["message"]) == ("ValueError", "broken input")
    assert (err["stage"], err["action"]) == ("s1", "fail")
    assert (err["stage_index"], err["action_index"]) == (0, 1)
    assert "raise ValueError" in err["traceback"]
    assert out.store == {"before": 1} and out.changed == {"before"}


def test_memory_error_keeps_its_type_name(reg):
    def hog(ctx):
        raise MemoryError()
    reg.register("hog", hog)
    out = Runner(reg).run(wf(("s", ["hog"])))
    assert out.error["type"] == "MemoryError" and out.error["action"] == "hog"


def test_system_exit_is_reported_not_propagated(reg):
    def quit_(ctx):
        raise SystemExit(3)
    reg.register("quit", quit_)
    out = Runner(reg).run(wf(("s", ["quit"])))
    assert out.status == "error" and out.error["type"] == "SystemExit"


def test_bail_ends_workflow_ok(reg):
    ran = []

    @reg.action("stop")
    def stop(ctx):
        try:
            ctx.bail("nothing to do")
        except Exception:              # a broad handler must not swallow a bail
            ran.append("swallowed")
    reg.register("later", lambda ctx: ran.append(ctx.stage))
    out = Runner(reg).run(wf(("s1", ["later", "stop", "later"]), ("s2", ["later"])))
    assert out.status == "ok" and out.bailed and out.bail_reason == "nothing to do"
    assert out.error is None and ran == ["s1"]


def test_unknown_action_fails_before_anything_runs(reg):
    ran = []
    reg.register("ok", lambda ctx: ran.append(1))
    out = Runner(reg).run(wf(("s1", ["ok"]), ("s2", ["ok", "nope"])))
    assert ran == [] and out.status == "error"
    assert out.error["type"] == "WorkflowError" and "unknown action 'nope'" in out.error["message"]
    assert (out.error["stage"], out.error["action"], out.error["action_index"]) == ("s2", "nope", 1)


def test_missing_import_is_an_error_outcome(reg):
    out = Runner(reg).run(wf(("s", ["x"]), imports=["no_such_module_qq"]))
    assert out.error["type"] == "WorkflowError" and "no_such_module_qq" in out.error["message"]
    assert out.error["stage"] is None


def test_middleware_order_first_registered_is_outermost(reg):
    trace = []
    reg.register("a", lambda ctx: trace.append(f"run {ctx.stage}.{ctx.action}"))
    runner = Runner(reg)

    def mw(tag):
        def m(call, next_):
            where = {"workflow": call.workflow.id, "stage": call.stage and call.stage.id,
                     "action": call.action and call.action.name}[call.level]
            trace.append(f"{tag}> {where}")
            next_()
            trace.append(f"<{tag} {where}")
        return m
    # registered deliberately interleaved across levels: order only matters within a level
    runner.use_action(mw("A1"))
    runner.use_stage(mw("S1"))
    runner.use_workflow(mw("W1"))
    runner.use_action(mw("A2"))
    runner.use_stage(mw("S2"))
    runner.use_workflow(mw("W2"))
    out = runner.run(wf(("s1", ["a", "a"]), ("s2", ["a"])))
    assert out.ok
    action = lambda s: ["A1> a", "A2> a", f"run {s}.a", "<A2 a", "<A1 a"]
    assert trace == (["W1> w", "W2> w",
                      "S1> s1", "S2> s1", *action("s1"), *action("s1"), "<S2 s1", "<S1 s1",
                      "S1> s2", "S2> s2", *action("s2"), "<S2 s2", "<S1 s2",
                      "<W2 w", "<W1 w"])


def test_invocation_carries_context_and_indices(reg):
    seen = []
    reg.register("a", lambda ctx: None)
    runner = Runner(reg)

    @runner.use_action
    def record(call, next_):
        seen.append((call.level, call.stage_index, call.action_index, call.context.action,
                     call.context.params == {"x": 1}, call.store is call.context.store))
        next_()
    runner.run(wf(("s1", [("a", {"x": 1})]), ("s2", ["a", ("a", {"x": 1})])))
    assert seen == [("action", 0, 0, "a", True, True), ("action", 1, 0, "a", False, True),
                    ("action", 1, 1, "a", True, True)]


def test_short_circuit_middleware_skips_action(reg):
    ran = []
    reg.register("a", lambda ctx: ran.append(ctx.action))
    reg.register("b", lambda ctx: ran.append(ctx.action))
    runner = Runner(reg)

    @runner.use_action
    def skip_b(call, next_):
        if call.action.name != "b":
            next_()
    out = runner.run(wf(("s", ["a", "b", "a"])))
    assert out.ok and ran == ["a", "a"]


def test_short_circuit_stage_middleware_skips_stage(reg):
    ran = []
    reg.register("a", lambda ctx: ran.append(ctx.stage))
    runner = Runner(reg)
    runner.use_stage(lambda call, next_: next_() if call.stage.id != "skip" else None)
    out = runner.run(wf(("one", ["a"]), ("skip", ["a"], {"k": 1}), ("two", ["a"])))
    assert ran == ["one", "two"]
    assert out.store == {"k": 1}   # a level's store is in place before its middleware runs


def test_middleware_can_retry_and_translate_errors(reg):
    attempts = []

    @reg.action("flaky")
    def flaky(ctx):
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("try again")
    runner = Runner(reg)

    @runner.use_action
    def retry(call, next_):
        try:
            next_()
        except ConnectionError:
            next_()
    assert runner.run(wf(("s", ["flaky"]))).ok and len(attempts) == 2


def test_error_raised_by_stage_middleware_is_located_at_stage(reg):
    reg.register("a", lambda ctx: None)
    runner = Runner(reg)

    def after(call, next_):
        next_()
        raise RuntimeError("audit failed")
    runner.use_stage(after)
    out = runner.run(wf(("s1", ["a"])))
    assert out.error["type"] == "RuntimeError"
    assert (out.error["stage"], out.error["action"]) == ("s1", None)


def test_middleware_sees_action_errors(reg):
    seen = []

    def boom(ctx):
        raise KeyError("k")
    reg.register("boom", boom)
    runner = Runner(reg)

    @runner.use_workflow
    def observe(call, next_):
        try:
            next_()
        except Exception as e:
            seen.append(type(e).__name__)
            raise
    out = runner.run(wf(("s", ["boom"])))
    assert seen == ["KeyError"] and out.error["action"] == "boom"


def test_sinks_receive_logs_changes_and_messages(reg, capsys):
    @reg.action("talk")
    def talk(ctx):
        ctx.logger.info("hi %s", "there", extra={"n": 1})
        ctx.store.put("x", 1)
        ctx.store.delete("gone")
        ctx.send("progress", {"done": 1})
    changes, logs, msgs = [], [], []
    out = Runner(reg).run(wf(("s", ["talk"])), store={"gone": 0},
                          on_change=lambda *c: changes.append(c),
                          log_sink=lambda *r: logs.append(r), send=lambda *m: msgs.append(m),
                          run_id="r1")
    assert changes == [("put", "x", 1), ("delete", "gone", None)]
    assert logs == [("INFO", "hi there", {"n": 1, "workflow": "w", "stage": "s", "action": "talk"})]
    assert out.logs == [{"level": "INFO", "message": "hi there", "extra": logs[0][2]}]
    assert msgs == [("progress", {"done": 1})] and out.messages == []
    assert out.run_id == "r1" and out.deleted == {"gone"}
    assert capsys.readouterr() == ("", "")


def test_messages_kept_in_outcome_without_send(reg):
    reg.register("s", lambda ctx: ctx.send("note", [1]))
    out = Runner(reg).run(wf(("st", ["s"])))
    assert out.messages == [("note", [1])]
    assert out.to_dict()["messages"] == [["note", [1]]]


def test_given_store_object_is_used_and_its_callback_fires(reg):
    calls = []
    store = Store({"a": 1}, on_change=lambda *c: calls.append(c))
    reg.register("inc", lambda ctx: {"a": ctx.store.get_int("a") + 1})
    out = Runner(reg).run(wf(("s", ["inc"])), store=store)
    assert store.get("a") == 2 and out.store == {"a": 2} and calls == [("put", "a", 2)]
    with pytest.raises(ValueError):
        Runner(reg).run(wf(("s", ["inc"])), store=store, on_change=lambda *c: None)


def test_run_accepts_dict_and_passes_spawn_fields(reg, tmp_path):
    reg.register("who", lambda ctx: {"item": ctx.item, "index": ctx.index,
                                     "out": str(ctx.output_dir), "run": ctx.run_id})
    out = Runner(reg).run(wf(("s", ["who"])).to_dict(), item={"n": 5}, index=2,
                          output_dir=tmp_path, run_id="rid")
    assert out.store == {"item": {"n": 5}, "index": 2, "out": str(tmp_path), "run": "rid"}


def test_outcome_to_dict_is_json_ready(reg):
    import json
    reg.register("a", lambda ctx: {"n": 1})
    d = Runner(reg).run(wf(("s", ["a"]))).to_dict()
    assert json.loads(json.dumps(d))["changed"] == ["n"]
