"""The launcher's work for a nested request is bounded and ends with the run (issue 11.6).

A nested request carrying many read globs under a granted tree made the
launcher walk /usr once per glob (about 0.19 s each) in a nested-spawn
thread, and that went on after the parent run had returned. Judged from the
launcher: when `spawn` returns, no thread of that run is still working, and
the nested run was refused with the bound that stopped it.
"""
from __future__ import annotations

import os
import threading

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.policy import build_plan, load_policy, resolve
from sandbox.policy.planner import PlanBounds
from sandbox.errors import PolicyError

pytestmark = pytest.mark.isolation

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")
CHILD = {"name": "c", "imports": ["policy_actions"],
         "stages": [{"id": "s", "actions": [{"name": "pol.rlimits"}]}]}


def _globbing_policy(n):
    d = load_policy("strict").to_dict()
    d.pop("source", None)
    d["filesystem"]["read"] = [*d["filesystem"]["read"], *(f"/usr/share/**/zz{i}*" for i in range(n))]
    return d


def _nested_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("nested-") and t.is_alive()]


@pytest.mark.parametrize("globs, bound", [(300, "glob rules"), (40, "glob expansion")])
def test_no_launcher_work_goes_on_after_the_run_returns(globs, bound):
    assert _nested_threads() == []
    launcher = Launcher(capture_output=True)
    r = launcher.spawn({"name": "p", "imports": ["policy_actions"],
                        "stages": [{"id": "s", "actions": [{"name": "pol.fire", "params": {
                            "child": CHILD, "policy": _globbing_policy(globs),
                            "linger": 0.05}}]}]},
                       policy="strict", code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    assert _nested_threads() == [], "the launcher still works for a run that has returned"
    assert [n["status"] for n in r.nested] == ["error"]
    # 300 globs: over the count; 40: stopped by the entry budget, the time bound,
    # or the end of the parent run, whichever comes first. The parent lingers 50 ms
    # after its request, so the request is being planned (its glob expansion, ~0.2 s
    # before the entry budget stops it) when the parent ends: ending it earlier, between
    # the nested spawner's check of the parent and the launcher's own, gave the run
    # status "cancelled" (not started) instead of the refusal this test judges.
    reason = r.nested[0]["reason"]
    assert bound in reason or "directory entries" in reason or "cancelled" in reason, reason


def test_bounds_apply_to_the_whole_plan_and_a_set_cancel_stops_it(tmp_path):
    policy = resolve(load_policy("strict"), {"WORKDIR": str(tmp_path), "OUTPUT": str(tmp_path),
                                             "HOME": str(tmp_path), "PYTHON": ["/usr"]})
    many = policy.replace(filesystem=policy.filesystem.__class__(
        **{**policy.filesystem.__dict__,
           "read": (*policy.filesystem.read, *(f"/usr/**/q{i}*" for i in range(10)))}))
    with pytest.raises(PolicyError, match="directory entries"):
        build_plan(many, bounds=PlanBounds(entries=1000))     # shared by all ten globs
    stop = threading.Event()
    stop.set()
    with pytest.raises(PolicyError, match="cancelled"):
        build_plan(many, bounds=PlanBounds(cancel=stop))
    build_plan(policy, bounds=PlanBounds())                  # strict itself is well inside
