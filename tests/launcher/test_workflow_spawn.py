"""Workflows in a child process: store sync, types, logs, handlers, errors."""
from __future__ import annotations

import os

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.workflow import Workflow

pytestmark = pytest.mark.isolation

HERE = os.path.dirname(os.path.abspath(__file__))


def wf(*actions, store=None, **extra):
    return Workflow.from_dict({"name": "t", "imports": ["wf_actions"], "store": store or {},
                               "stages": [{"id": "s1", "actions": list(actions)}], **extra})


@pytest.fixture
def spawn():
    launcher = Launcher(capture_output=True)

    def run(workflow, **kw):
        kw.setdefault("code_paths", [HERE])
        return launcher.spawn(workflow, **kw)
    run.launcher = launcher
    return run


def test_types_survive_the_round_trip(spawn):
    value = {"i": 1, "f": 1.5, "b": True, "s": "x", "n": None, "l": [1, [2.0, {"k": False}]],
             "big": 2**62}
    r = spawn(wf({"name": "echo_value", "params": {"value": value}}))
    assert r.status == "ok", (r.reason, r.error)
    got = r.store["echoed"]
    assert got == value
    assert type(got["i"]) is int and type(got["f"]) is float and type(got["big"]) is int
    assert type(got["l"][1][0]) is float


def test_only_changed_keys_merge_into_the_callers_store(spawn):
    mine = {"keep": "parent", "change": 1, "gone": True}
    r = spawn(wf("change_some"), store=mine)
    assert r.status == "ok", (r.reason, r.error)
    assert mine == {"keep": "parent", "change": 2, "new": [1, 2]}
    assert r.changed_keys == ["change", "new"] and r.deleted_keys == ["gone"]


def test_store_updates_arrive_live(spawn):
    seen = []
    r = spawn(wf("change_some"), store={"change": 1, "gone": 1},
              handlers={"store_put": lambda m, info: seen.append(m.payload["key"])})
    assert r.status == "ok" and seen == ["change", "new"]


def test_logs_and_custom_messages_reach_handlers(spawn):
    got = []
    spawn.launcher.on("*", lambda m, info: got.append(m.type))
    r = spawn(wf("chatty"))
    assert r.status == "ok", (r.reason, r.error)
    assert [log["message"] for log in r.logs] == ["one", "two"]
    assert r.messages["custom.event"] == 2
    assert got.count("custom.event") == 2 and "result" in got
    assert r.stdout == "" and r.stderr == ""


def test_a_handler_that_raises_is_reported_and_the_run_goes_on(spawn):
    def bad(msg, info):
        raise RuntimeError("handler bug")
    r = spawn(wf("chatty"), handlers={"custom.event": bad})
    assert r.status == "ok"
    assert len(r.handler_errors) == 2 and r.handler_errors[0]["message"] == "handler bug"


def test_handler_removed_by_id_is_not_called(spawn):
    calls = []
    hid = spawn.launcher.on("custom.event", lambda m, i: calls.append(1))
    assert spawn.launcher.off(hid)
    spawn(wf("chatty"))
    assert calls == []


def test_an_action_that_raises_gives_type_message_traceback(spawn):
    r = spawn(wf("boom"))
    assert r.status == "error"
    assert r.error["type"] == "ValueError" and r.error["message"] == "boom!"
    assert "Traceback" in r.error["traceback"] and r.error["action"] == "boom"


def test_unknown_action_is_an_input_error_and_nothing_runs(spawn):
    from sandbox.errors import WorkflowError
    with pytest.raises(WorkflowError, match="unknown action 'no_such_action'.*echo_value"):
        spawn(wf("no_such_action"))
    with pytest.raises(WorkflowError, match="defines no 'nope'"):
        spawn(wf("wf_actions:nope"))
    with pytest.raises(WorkflowError, match="module 'no_such_mod' not found"):
        spawn(wf("no_such_mod:f"))


def test_static_check_never_imports_the_action_module(tmp_path):
    from sandbox.workflow.static_check import check_actions
    (tmp_path / "evil_mod.py").write_text(
        "open(__file__ + '.imported', 'w').close()\n"
        "from sandbox.workflow import action\n@action('evil')\ndef evil(ctx): pass\n")
    check_actions(Workflow.from_dict({"imports": ["evil_mod"],
                                      "stages": [{"actions": ["evil"]}]}), [str(tmp_path)])
    assert not (tmp_path / "evil_mod.py.imported").exists()


def test_memory_error_is_limit_exceeded_only_with_the_monitors_evidence(spawn, tmp_path):
    """With a memory cgroup the monitor sees the limit hit: limit_exceeded/memory.
    Without one (an unprivileged caller here) the limit is RLIMIT_AS and the only
    sign is the child's own MemoryError, which is never taken as evidence: the
    run is an honest `error`, and limits_applied says why."""
    pol = tmp_path / "mem.toml"
    pol.write_text('extends = ["default"]\n[limits]\nmemory = "256MiB"\n')
    r = spawn(wf("eat_memory"), policy=str(pol))
    mechanism = r.limits_applied.get("memory", "")
    if mechanism.startswith("cgroup"):
        assert (r.status, r.reason) == ("limit_exceeded", "memory"), (r.status, r.reason, r.error)
    else:
        assert mechanism == "rlimit", r.limits_applied
        assert r.status == "error" and "MemoryError" in r.reason, (r.status, r.reason)


def test_result_is_json_serialisable(spawn):
    import json
    r = spawn(wf("chatty"))
    assert json.loads(r.to_json())["run_id"] == r.run_id


def test_static_check_sees_a_module_edited_since_the_last_check(tmp_path):
    from sandbox.errors import WorkflowError
    from sandbox.workflow.static_check import check_actions
    mod = tmp_path / "grows.py"
    mod.write_text("from sandbox.workflow import action\n@action('a')\ndef a(ctx): pass\n")
    wf_b = Workflow.from_dict({"imports": ["grows"], "stages": [{"actions": ["b"]}]})
    with pytest.raises(WorkflowError, match="unknown action 'b'"):
        check_actions(wf_b, [str(tmp_path)])
    st = os.stat(mod)
    mod.write_text(mod.read_text() + "@action('b')\ndef b(ctx): pass\n")
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    check_actions(wf_b, [str(tmp_path)])
