"""Nested spawns: an action spawns a sub-workflow through the launcher."""
from __future__ import annotations

import os

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.middleware import HmacAuth, Metrics

pytestmark = pytest.mark.isolation

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")
TYPED = {"i": 7, "f": 0.5, "b": True, "s": "x", "n": None, "l": [1, [2.0, {"k": False}]]}


def wf(*actions, **extra):
    return {"name": "nested", "imports": ["mw_actions"],
            "stages": [{"id": "s", "actions": list(actions)}], **extra}


def put(key, value):
    return wf({"name": "mw.put", "params": {"key": key, "value": value}})


def nest(child, policy=None):
    return wf({"name": "mw.nest", "params": {"child": child, "policy": policy}})


@pytest.fixture
def launcher():
    return Launcher(capture_output=True)


def test_a_grandchild_store_write_reaches_the_top_with_types_and_depth(launcher):
    top_seen, run_seen = [], []
    launcher.on("store_put", lambda m, info: top_seen.append(
        (info.depth, m.payload["key"], m.payload["value"])))
    r = launcher.spawn(nest(nest(put("deep", TYPED))), code_paths=[CODE],
                       handlers={"store_put": lambda m, info: run_seen.append(
                           (info.depth, m.payload["key"]))})
    assert r.status == "ok", (r.reason, r.error)
    deep = [(d, v) for d, k, v in top_seen if k == "deep"]
    assert deep == [(2, TYPED)]                            # observed at the top, depth 2
    assert type(deep[0][1]["l"][1][0]) is float and type(deep[0][1]["i"]) is int
    assert (2, "deep") in run_seen and (1, "child_result") in run_seen
    # the merge is explicit: each level puts its child's result into its own store
    child = r.store["child_result"]
    assert child["status"] == "ok" and child["depth"] == 1
    grandchild = child["store"]["child_result"]
    assert grandchild["depth"] == 2 and grandchild["store"]["deep"] == TYPED
    assert [n["depth"] for n in r.nested] == [1] and r.nested[0]["status"] == "ok"


def test_the_depth_limit_is_enforced_by_the_launcher(launcher):
    limited = Launcher(capture_output=True, max_depth=1)
    r = limited.spawn(nest(nest(put("deep", 1))), code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    child = r.store["child_result"]
    assert child["status"] == "ok"                           # depth 1 is allowed
    refused = child["store"]["child_result"]
    assert refused["status"] == "error" and "depth limit" in refused["reason"]
    assert refused["depth"] == 2 and "deep" not in refused["store"]


def test_a_sub_workflow_asking_for_a_looser_policy_gets_the_parents_limits(launcher):
    # `default` allows 1024 open files, `strict` 256: the child's limits are derived
    # from its parent's, never looser (the rest of the request must fit, or it is refused).
    child = {"name": "n", "imports": ["policy_actions"],
             "stages": [{"id": "s", "actions": [{"name": "pol.rlimits"}]}]}
    r = launcher.spawn(nest(child, policy="default"), policy="strict", code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    res = r.store["child_result"]
    assert res["status"] == "ok", res
    assert res["store"] == {"nofile": 256}


def test_a_narrower_policy_is_accepted_and_a_file_path_is_refused(launcher):
    r = launcher.spawn(nest(put("k", 1), policy="strict"), code_paths=[CODE])
    assert r.store["child_result"]["status"] == "ok"
    assert r.store["child_result"]["store"] == {"k": 1}
    r = launcher.spawn(nest(put("k", 1), policy="/etc/passwd"), code_paths=[CODE])
    assert r.store["child_result"]["status"] == "error"
    assert "not a file" in r.store["child_result"]["reason"]


def test_nested_spawns_work_with_authenticated_channels_and_metrics(launcher):
    launcher.use(HmacAuth)
    launcher.use(Metrics)
    r = launcher.spawn(nest(put("k", 1)), code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error, r.rejected)
    assert r.store["child_result"]["store"] == {"k": 1} and r.rejected == []
    assert r.metrics["messages"]["out"]["spawn_result"] == 1
    assert r.metrics["messages"]["in"]["spawn_request"] == 1


def test_hooks_see_nested_spawns_with_their_depth(launcher):
    depths = []
    launcher.after_spawn(lambda res, info: depths.append((info.depth, res.status)))
    launcher.spawn(nest(nest(put("k", 1))), code_paths=[CODE])
    assert sorted(depths) == [(0, "ok"), (1, "ok"), (2, "ok")]
