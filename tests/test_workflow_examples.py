"""The example workflows in docs/examples run in-process and keep JSON types."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sandbox.workflow import Runner, load_workflow

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_examples_validate_and_round_trip(name):
    wf = load_workflow(EXAMPLES / name)
    assert type(wf).from_dict(wf.to_dict()) == wf


def test_hello():
    out = Runner().run(load_workflow(EXAMPLES / "hello.json"))
    assert out.ok, out.error
    assert out.store["message"] == "hello, sandbox!"
    assert out.logs[0]["extra"]["who"] == "sandbox"


def test_spawn_process_in_process(tmp_path):
    wf = load_workflow(EXAMPLES / "spawn_process.json")
    assert wf.policy == "strict"
    out = Runner().run(wf, output_dir=tmp_path)
    assert out.ok, out.error
    s = out.store
    assert (s["pid"], s["ppid"], s["hostname"]) == (os.getpid(), os.getppid(), socket.gethostname())
    assert s["sum"] == 6 and type(s["sum"]) is int
    assert s["squares"] == [1, 4, 9] and all(type(v) is int for v in s["squares"])
    assert (tmp_path / "report.txt").read_text().splitlines()[1:] == ["sum 6", "squares [1, 4, 9]"]
    assert s["output_file"] == str(tmp_path / "report.txt")


def test_spawn_process_bails_on_empty_items(tmp_path):
    out = Runner().run(load_workflow(EXAMPLES / "spawn_process.json"), store={"items": []},
                       output_dir=tmp_path)
    assert out.ok and out.bailed and "items" in out.bail_reason
    assert "sum" not in out.store and not (tmp_path / "report.txt").exists()


def test_floats_stay_floats(tmp_path):
    out = Runner().run(load_workflow(EXAMPLES / "spawn_process.json"),
                       store={"items": [1.5, 2]}, output_dir=tmp_path)
    assert out.store["sum"] == 3.5 and out.store["squares"] == [2.25, 4]
    assert type(out.store["squares"][1]) is int
