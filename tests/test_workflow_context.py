"""Store typed accessors and change tracking; ActionContext logger, send, bail."""
from __future__ import annotations

import enum
import logging

import pytest

from sandbox.workflow import ActionContext, Bail, Store


def test_typed_accessors():
    s = Store({"i": 1, "f": 1.5, "s": "x", "b": True, "l": [1], "d": {"k": 1}, "n": None})
    assert s.get_int("i") == 1 and type(s.get_int("i")) is int
    assert s.get_float("f") == 1.5
    assert s.get_float("i") == 1.0 and type(s.get_float("i")) is float
    assert s.get_str("s") == "x"
    assert s.get_bool("b") is True
    assert s.get_list("l") == [1]
    assert s.get_dict("d") == {"k": 1}
    assert s.get("n", "dflt") is None          # present None is a value, not "missing"
    assert s.get_int("missing") is None and s.get_int("missing", 7) == 7
    assert s.get("i", type=(str, int)) == 1


@pytest.mark.parametrize("key, getter, expected, actual", [
    ("b", "get_int", "int", "bool"),           # bool is an int in Python, not here
    ("b", "get_float", "float", "bool"),
    ("i", "get_str", "str", "int"),
    ("i", "get_bool", "bool", "int"),
    ("s", "get_list", "list", "str"),
    ("l", "get_dict", "dict", "list"),
    ("f", "get_int", "int", "float"),
])
def test_type_mismatch_names_key_expected_actual(key, getter, expected, actual):
    s = Store({"i": 1, "f": 1.5, "s": "x", "b": True, "l": [1]})
    with pytest.raises(TypeError) as ei:
        getattr(s, getter)(key)
    msg = str(ei.value)
    assert f"store key {key!r}" in msg and f"expected {expected}" in msg and f"got {actual}" in msg


def test_get_with_type_int_rejects_true():
    with pytest.raises(TypeError, match="expected int, got bool"):
        Store({"b": True}).get("b", type=int)


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value, exc, what", [
    ((1, 2), TypeError, "use a list"),
    ({1: "a"}, TypeError, "object key 1"),
    (float("inf"), ValueError, "not a finite number"),
    ([1, {"x": object()}], TypeError, r"store\['k'\]\[1\]\.x: object is not a JSON value"),
    (Color.RED, TypeError, "Color is not a JSON value"),
    ({1, 2}, TypeError, "set is not a JSON value"),
])
def test_put_rejects_non_json(value, exc, what):
    s = Store()
    with pytest.raises(exc, match=what):
        s.put("k", value)
    assert "k" not in s and s.changed_keys() == set()


def test_put_rejects_cycles_and_non_str_keys():
    s = Store()
    loop: list = []
    loop.append(loop)
    with pytest.raises(TypeError, match="cyclic"):
        s.put("k", loop)
    with pytest.raises(TypeError, match="keys must be str"):
        s.put(1, "v")


def test_initial_store_is_validated():
    with pytest.raises(TypeError):
        Store({"t": (1,)})


def test_values_are_copied_in_and_out():
    src = [1, 2]
    s = Store()
    s.put("l", src)
    src.append(3)
    got = s.get("l")
    got.append(4)
    s["l"].append(5)
    assert s.get("l") == [1, 2]


def test_change_tracking_and_on_change():
    calls = []
    s = Store({"keep": 1, "gone": 2, "back": 3}, on_change=lambda *a: calls.append(a))
    assert s.changed_keys() == set() and s.deleted_keys() == set()
    s.put("new", {"a": [1]})
    s.delete("gone")
    s.delete("back")
    s.put("back", 4)
    s["item"] = 5             # mapping protocol goes through put
    del s["item"]             # ... and delete
    s.put("keep", 1)          # same value still counts as a change
    assert s.changed_keys() == {"new", "back", "keep"}
    assert s.deleted_keys() == {"gone", "item"}
    assert calls == [("put", "new", {"a": [1]}), ("delete", "gone", None),
                     ("delete", "back", None), ("put", "back", 4), ("put", "item", 5),
                     ("delete", "item", None), ("put", "keep", 1)]
    assert s.to_dict() == {"keep": 1, "back": 4, "new": {"a": [1]}}
    assert sorted(s.keys()) == ["back", "keep", "new"] and len(s) == 3


def test_delete_missing_raises_without_callback():
    calls = []
    s = Store(on_change=lambda *a: calls.append(a))
    with pytest.raises(KeyError):
        s.delete("nope")
    assert s.pop("nope", None) is None
    assert calls == [] and s.deleted_keys() == set()


def test_on_change_value_is_a_copy():
    seen = []
    s = Store(on_change=lambda op, k, v: seen.append(v))
    s.put("l", [1])
    seen[0].append(2)
    assert s.get("l") == [1]


def make_ctx(**kw):
    records, sent = [], []
    ctx = ActionContext(store=kw.pop("store", Store()),
                        log_sink=lambda *r: records.append(r),
                        send=lambda *m: sent.append(m), workflow="wf", stage="st",
                        action="act", **kw)
    return ctx, records, sent


def test_logger_goes_to_sink_only(capsys, caplog):
    ctx, records, _ = make_ctx()
    with caplog.at_level(logging.DEBUG):
        ctx.logger.debug("dbg %d", 1)
        ctx.logger.warning("careful", extra={"n": 2, "obj": object()})
        try:
            raise ValueError("boom")
        except ValueError:
            ctx.logger.exception("failed")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert caplog.records == []               # nothing reached the root logger either
    assert records[0] == ("DEBUG", "dbg 1", {"workflow": "wf", "stage": "st", "action": "act"})
    level, message, extra = records[1]
    assert (level, message, extra["n"]) == ("WARNING", "careful", 2)
    assert extra["obj"].startswith("<object object")   # non-JSON extras become repr
    assert records[2][0] == "ERROR" and "ValueError: boom" in records[2][1]


def test_a_context_makes_its_logger_only_when_used(monkeypatch):
    # issue 14: a forked sandboxee pays for every Logger (its handler, its lock) in
    # pages copied from the warm template, so an action that never logs makes none
    from sandbox.workflow import context as context_mod
    made = []
    real = context_mod.make_logger
    monkeypatch.setattr(context_mod, "make_logger", lambda *a: made.append(a) or real(*a))
    ctx, records, _ = make_ctx()
    ctx.send("progress", 1)
    assert made == []
    assert ctx.logger is ctx.logger            # one logger, made once
    ctx.logger.info("now")
    assert len(made) == 1 and made[0][0] == "sandbox.workflow.wf.st.act"
    assert records == [("INFO", "now", {"workflow": "wf", "stage": "st", "action": "act"})]


def test_logger_sink_failure_propagates_instead_of_printing(capsys):
    def broken(*a):
        raise OSError("pipe closed")
    ctx = ActionContext(store=Store(), log_sink=broken, send=lambda *a: None, workflow="w")
    with pytest.raises(OSError, match="pipe closed"):
        ctx.logger.info("x")
    assert capsys.readouterr() == ("", "")


def test_send_validates_payload():
    ctx, _, sent = make_ctx()
    payload = {"n": 1}
    ctx.send("progress", payload)
    payload["n"] = 2
    assert sent == [("progress", {"n": 1})]
    with pytest.raises(TypeError):
        ctx.send("progress", {"bad": (1,)})
    with pytest.raises(TypeError):
        ctx.send("", {})


def test_bail_raises_bail_not_exception():
    ctx, _, _ = make_ctx()
    with pytest.raises(Bail) as ei:
        ctx.bail("done early")
    assert ei.value.reason == "done early"
    assert not isinstance(ei.value, Exception)


def test_context_fields(tmp_path):
    ctx, _, _ = make_ctx(params={"a": [1]}, run_id="r1", output_dir=str(tmp_path),
                         item={"x": 1}, index=3)
    assert ctx.params == {"a": [1]} and ctx.run_id == "r1"
    assert ctx.output_dir == tmp_path and ctx.item == {"x": 1} and ctx.index == 3
    with pytest.raises(TypeError):
        ctx.params["b"] = 1
    plain, _, _ = make_ctx()
    assert plain.item is None and plain.index is None and plain.output_dir is None
