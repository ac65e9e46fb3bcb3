"""The launcher never sends a frame its peer must refuse (attack probe).

The child's end of the IPC channel refuses a frame nesting deeper than 64 levels
or larger than the frame limit; the launcher's encoder checked the size only.
A caller's store value 62 levels deep (fine in a `--store`, and what a child may
send back in a store_put) started a sandbox that failed with "ProtocolError"
(and `sandbox run` exited 1), and a nested run's store that deep made the
requesting action's ctx.spawn raise instead of returning a result. Judged from
the launcher: bad input is an InputError before anything runs, and a nested
result that cannot travel comes back as a refusal saying why.
"""
from __future__ import annotations

import os

import pytest

from sandbox.errors import InputError, ProtocolError
from sandbox.ipc.frames import MAX_DEPTH, encode
from sandbox.launcher.launcher import Launcher

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")
HELLO = os.path.join(os.path.dirname(CODE), "..", "docs", "examples", "hello.json")


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_encode_refuses_what_the_peer_would_refuse():
    encode("x", _deep(MAX_DEPTH - 1))                  # the frame's own object is one
    with pytest.raises(ProtocolError, match="deeper than 64"):
        encode("x", _deep(MAX_DEPTH))
    encode("x", "[" * 1000)                            # brackets in a string are text


@pytest.mark.isolation
@pytest.mark.parametrize("store", [{"k": _deep(62)}, {"k": "x" * (2 << 20)}],
                         ids=["deep", "large"])
def test_a_store_that_cannot_be_sent_is_bad_input_and_nothing_runs(store, tmp_path):
    from sandbox.workflow import load_workflow
    out = tmp_path / "out"
    with pytest.raises(InputError, match="store"):
        Launcher(capture_output=True).spawn(load_workflow(HELLO), store=store,
                                            output_dir=str(out))
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.isolation
def test_a_nested_result_too_deep_to_travel_is_a_refusal_not_an_exception():
    wf = {"name": "nest", "imports": ["plant_actions"],
          "stages": [{"id": "s", "actions": ["plant.nest_deep"]}]}
    r = Launcher(capture_output=True).spawn(wf, code_paths=[CODE])
    assert r.status == "ok", (r.status, r.reason, r.error)
    child = r.store["child"]
    assert child["status"] == "error" and "deep" in child["reason"], child
