"""The command line: exit codes, one-line errors, stdout left to the program."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sandbox(*args, cwd=ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.isolation
def test_exec_echo_prints_only_the_programs_output():
    p = sandbox("exec", "--", "/bin/echo", "hi")
    assert (p.returncode, p.stdout, p.stderr) == (0, "hi\n", "")


@pytest.mark.isolation
def test_exec_exit_code_and_signal():
    assert sandbox("exec", "--", "sh", "-c", "exit 7").returncode == 7
    p = sandbox("exec", "--", sys.executable, "-I", "-c", "import ctypes; ctypes.string_at(0)")
    assert p.returncode == 128 + 11 and "signaled" in p.stderr


@pytest.mark.isolation
def test_exec_timeout_and_result_file(tmp_path):
    out = tmp_path / "r.json"
    # 3 s, not 1: the limit counts from the launcher's call, a cold start's set-up included
    # (tests/test_runner_init.py::test_a_timeout_result_keeps_the_signal_and_exits_124 says why)
    p = sandbox("exec", "--timeout", "3", "--result", str(out), "--", "sleep", "60")
    assert p.returncode == 124 and p.stdout == ""
    result = json.loads(out.read_text())
    assert result["status"] == "timeout" and result["signal"] == 9


def test_exec_without_program_is_exit_125():
    p = sandbox("exec")
    assert p.returncode == 125 and p.stderr.startswith("sandbox: error: no program")


def test_missing_policy_file_is_exit_125_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    p = sandbox("exec", "--policy", str(tmp_path / "nope.toml"), "--", "touch", str(marker))
    assert p.returncode == 125 and "nope.toml" in p.stderr and len(p.stderr.splitlines()) == 1
    assert not marker.exists()


def test_invalid_policy_is_exit_125_with_location(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[limits]\nmemory = "lots"\n')
    p = sandbox("exec", "--policy", str(bad), "--", "true")
    assert p.returncode == 125 and "bad.toml" in p.stderr and "limits.memory" in p.stderr


def test_invalid_workflow_is_exit_125(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text('{"stages": [{"actions": [{"nmae": "x"}]}]}')
    p = sandbox("run", str(wf))
    assert p.returncode == 125 and "wf.json" in p.stderr and "nmae" in p.stderr


@pytest.mark.isolation
def test_run_workflow_json_summary():
    p = sandbox("run", "docs/examples/spawn_process.json", "--json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["status"] == "ok" and result["store"]["sum"] == 6


@pytest.mark.isolation
def test_demo_verifies_itself():
    p = sandbox("demo")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "checks passed" in p.stdout and "FAIL" not in p.stdout


def test_help_teaches():
    p = sandbox("--help")
    assert p.returncode == 0 and "examples:" in p.stdout
    p = sandbox("exec", "--help")
    assert p.returncode == 0 and "exit code" in p.stdout


def test_unknown_action_is_exit_125_and_nothing_runs(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text('{"stages": [{"actions": ["no_such_action"]}]}')
    p = sandbox("run", str(wf))
    assert p.returncode == 125 and len(p.stderr.splitlines()) == 1
    assert "wf.json" in p.stderr and "unknown action 'no_such_action'" in p.stderr


def _parsers(parser, path=()):
    """Every (sub)command's parser of the CLI, with its command path."""
    import argparse
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_help_text_is_printable():
    """A help text is printed on the user's terminal: a control character in it is
    acted on, not shown (`sandbox audit --help` printed an ESC and a CSI where it meant
    to show their escapes)."""
    import re
    from sandbox.cli.main import build_parser
    control = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
    seen = []
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        seen.append(path)
        assert not control.search(text), (" ".join(path), control.findall(text))
    assert ("audit", "show") in seen and ("exec",) in seen, seen
