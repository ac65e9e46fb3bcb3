"""Workflow definitions: validation errors name file and JSON path; types survive."""
from __future__ import annotations

import json
import re

import pytest

from sandbox.errors import InputError, WorkflowError
from sandbox.workflow import ActionRef, Stage, Workflow, load_workflow


def minimal(**top):
    d = {"stages": [{"id": "s1", "actions": [{"name": "hello"}]}]}
    d.update(top)
    return d


def test_minimal_workflow_defaults():
    wf = Workflow.from_dict(minimal())
    assert re.fullmatch(r"[0-9a-f]{32}", wf.id)
    assert wf.name == wf.id and wf.tags == () and wf.policy is None and wf.imports == ()
    assert wf.stages == (Stage(id="s1", name="s1", actions=(ActionRef("hello", {}),)),)


def test_ids_are_unique_when_absent():
    assert Workflow.from_dict(minimal()).id != Workflow.from_dict(minimal()).id


def test_stage_id_defaults_to_name_then_position():
    wf = Workflow.from_dict({"stages": [{"name": "Build", "actions": ["a"]},
                                        {"actions": ["b"]}]})
    assert [(s.id, s.name) for s in wf.stages] == [("Build", "Build"), ("stage2", "stage2")]


def test_action_shorthand_string():
    wf = Workflow.from_dict(minimal(stages=[{"actions": ["pkg.mod:fn"]}]))
    assert wf.stages[0].actions == (ActionRef("pkg.mod:fn", {}),)


def test_unknown_key_names_source_and_path():
    d = minimal(stages=[{"actions": ["a"]}, {"actions": [{"nmae": "x"}]}])
    with pytest.raises(WorkflowError) as ei:
        Workflow.from_dict(d, source="flow.json")
    msg = str(ei.value)
    assert msg.startswith("flow.json: stages[1].actions[0]: unknown key 'nmae'")
    assert "did you mean 'name'" in msg
    assert isinstance(ei.value, InputError)


@pytest.mark.parametrize("doc, where, what", [
    ({"stages": []}, "stages", "non-empty list of stages, got empty list"),
    ({}, "", "missing required key 'stages'"),
    ({"stages": [{"actions": []}]}, "stages[0].actions", "non-empty list"),
    ({"stages": [{"id": "a"}]}, "stages[0]", "missing required key 'actions'"),
    ({"stages": [{"actions": [{"params": {}}]}]}, "stages[0].actions[0]", "missing required key 'name'"),
    ({"stages": [{"actions": [{"name": 3}]}]}, "stages[0].actions[0].name", "expected a string, got number"),
    ({"stages": [{"actions": [{"name": "a", "params": []}]}]}, "stages[0].actions[0].params",
     "expected an object, got empty list"),
    (minimal(tags="x"), "tags", "expected a list of strings"),
    (minimal(tags=["ok", 1]), "tags[1]", "expected a non-empty string"),
    (minimal(policy=""), "policy", "must not be empty"),
    (minimal(policy=5), "policy", "expected a string"),
    (minimal(imports=[None]), "imports[0]", "expected a non-empty string"),
    (minimal(store=[1]), "store", "expected an object, got list"),
    (minimal(bogus=1), "", "unknown key 'bogus'"),
    ({"stages": [{"id": "a", "actions": ["x"]}, {"id": "a", "actions": ["y"]}]},
     "stages[1].id", "duplicate stage id 'a'"),
    ({"stages": [{"actions": ["a:b:c"]}]}, "stages[0].actions[0].name", "neither a registered name"),
    ({"stages": "nope"}, "stages", "got string"),
    ([1], "", "expected an object, got list"),
])
def test_validation_errors(doc, where, what):
    with pytest.raises(WorkflowError) as ei:
        Workflow.from_dict(doc, source="w.json")
    msg = str(ei.value)
    prefix = f"w.json: {where}: " if where else "w.json: "
    assert msg.startswith(prefix), msg
    assert what in msg
    assert ei.value.path == where and ei.value.file == "w.json"


def test_store_values_must_be_json_with_path():
    with pytest.raises(WorkflowError, match=r"stages\[0\]\.store\.when: .*not a finite number"):
        Workflow.from_dict({"stages": [{"store": {"when": float("nan")}, "actions": ["a"]}]})
    with pytest.raises(WorkflowError, match=r"store\.t\[1\]: tuple is not a JSON value \(use a list\)"):
        Workflow.from_dict(minimal(store={"t": [0, (1, 2)]}))
    with pytest.raises(WorkflowError, match=r"params\.m: object key 1 is a int"):
        Workflow.from_dict(minimal(stages=[{"actions": [{"name": "a", "params": {"m": {1: 2}}}]}]))


def test_types_survive_to_dict_from_dict_and_json():
    store = {"n": 3, "f": 2.5, "whole_float": 2.0, "b": True, "none": None, "s": "x",
             "big": 2 ** 70, "nested": {"l": [1, [2, {"k": False}]], "e": {}}}
    d = minimal(id="w", name="W", tags=["t"], policy="strict", imports=["m"],
                description="d", store=store)
    d["stages"][0]["store"] = {"i": 7}
    d["stages"][0]["actions"][0]["params"] = {"count": 10, "ratio": 0.5}
    wf = Workflow.from_dict(d)
    again = Workflow.from_dict(json.loads(json.dumps(wf.to_dict())))
    assert again == wf
    for w in (wf, again):
        assert type(w.store["n"]) is int and type(w.store["big"]) is int
        assert type(w.store["whole_float"]) is float
        assert type(w.store["b"]) is bool
        assert w.store["nested"] == store["nested"]
        assert type(w.stages[0].store["i"]) is int
        assert type(w.stages[0].actions[0].params["count"]) is int
    assert wf.policy == "strict" and wf.tags == ("t",) and wf.imports == ("m",)


def test_from_dict_copies_input():
    d = minimal(store={"l": [1]})
    wf = Workflow.from_dict(d)
    d["store"]["l"].append(2)
    assert wf.store == {"l": [1]}


def test_load_workflow_reads_file(tmp_path):
    p = tmp_path / "w.json"
    p.write_text(json.dumps(minimal(id="abc", store={"n": 1})))
    wf = load_workflow(p)
    assert wf.id == "abc" and type(wf.store["n"]) is int


def test_load_workflow_reports_bad_json_with_position(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"stages": [\n  {"actions": ["a"],}\n]}')
    with pytest.raises(WorkflowError, match=rf"^{re.escape(str(p))}:2:\d+: invalid JSON"):
        load_workflow(p)


def test_load_workflow_rejects_duplicate_keys_and_nan(tmp_path):
    p = tmp_path / "dup.json"
    p.write_text('{"stages": [{"actions": ["a"]}], "store": {"k": 1, "k": 2}}')
    with pytest.raises(WorkflowError, match="duplicate key 'k'"):
        load_workflow(p)
    p.write_text('{"stages": [{"actions": ["a"]}], "store": {"k": NaN}}')
    with pytest.raises(WorkflowError, match="NaN is not valid JSON"):
        load_workflow(p)


def test_load_workflow_missing_file(tmp_path):
    with pytest.raises(WorkflowError, match="cannot read workflow"):
        load_workflow(tmp_path / "nope.json")


def test_error_in_named_file_mentions_it(tmp_path):
    p = tmp_path / "w.json"
    p.write_text(json.dumps({"stages": [{"actions": [{"name": "a", "parms": {}}]}]}))
    with pytest.raises(WorkflowError) as ei:
        load_workflow(p)
    assert str(ei.value).startswith(f"{p}: stages[0].actions[0]: unknown key 'parms' (did you mean 'params'?)")
