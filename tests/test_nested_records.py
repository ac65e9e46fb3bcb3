"""What the launcher keeps of a nested request's refusal is bounded (attack probe).

`RunResult.nested` keeps one entry per request served for the run, with the
reason; a refusal's reason quoted what the child sent (a policy name, a key, an
action name), so 256 requests of ~600 KB each were ~150 MB kept by the launcher,
outside `Budget.max_retained`. Judged from the launcher: each kept reason is
clipped, and the action is still told why.
"""
from __future__ import annotations

import os

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.launcher.records import MAX_TEXT

pytestmark = pytest.mark.isolation

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")
LONG = 600_000


def test_refusal_reasons_kept_for_nested_requests_are_clipped():
    ok = {"name": "c", "stages": [{"id": "s", "actions": ["json:dumps"]}]}
    requests = [
        ["p/@@", ok],                                                       # a "path"
        ["n@@", ok],                                                        # unknown name
        [None, {**ok, "k@@": 1}],                                           # unknown key
        [None, {"name": "c", "stages": [{"id": "s", "actions": ["nosuch@@"]}]}],
        [{"limits": {"wall": "q@@"}}, ok],                                  # bad policy value
    ]
    wf = {"name": "attack", "imports": ["plant_actions"],
          "stages": [{"id": "s", "actions": [{"name": "plant.nest_odd", "params": {
              "requests": requests, "long": LONG}}]}]}
    r = Launcher(capture_output=True).spawn(wf, code_paths=[CODE])
    assert r.status == "ok", (r.status, r.reason)
    assert len(r.nested) == len(requests)
    assert all(e["status"] == "error" for e in r.nested), r.nested
    assert all(len(e["reason"]) <= MAX_TEXT + 100 for e in r.nested), \
        [len(e["reason"]) for e in r.nested]
    assert all(0 < n <= MAX_TEXT + 100 for n in r.store["reason_lengths"]), \
        r.store["reason_lengths"]
