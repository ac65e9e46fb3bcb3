"""`sandbox run`: --store inputs, --follow, and the live progress bar drawn from
the action's (untrusted) progress messages on a real terminal."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "docs", "examples")

ACTIONS = '''
import time
from sandbox.workflow import action

@action("steps")
def steps(ctx):
    n = int(ctx.params.get("n", 5))
    ctx.send("progress", "not a dict")                     # hostile shapes are ignored
    ctx.send("progress", {"done": -3, "of": "many", "message": ["x"]})
    for i in range(1, n + 1):
        ctx.send("progress", {"done": i, "of": n,
                              "message": "step \\x1b]0;pwned\\x07" + str(i)})
        ctx.logger.info(f"did step {i}")
        time.sleep(0.15)
'''


def _workflow(tmp: Path) -> Path:
    (tmp / "live_steps.py").write_text(ACTIONS)
    wf = tmp / "steps.json"
    wf.write_text(json.dumps({"name": "steps", "imports": ["live_steps"],
                              "stages": [{"id": "s", "actions": [
                                  {"name": "steps", "params": {"n": 5}}]}]}))
    tmp.chmod(0o755)
    return wf


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "SANDBOX_HOME": str(tmp / "state"), "COLUMNS": "100",
            "TERM": "xterm"}


@pytest.mark.isolation
def test_store_inputs_are_json_or_strings(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", "--json", "--store",
                        "items=[4, 5]", os.path.join(EXAMPLES, "spawn_process.json")],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["store"]["sum"] == 9
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", "--json", "--store",
                        "greeting=hey", os.path.join(EXAMPLES, "hello.json")],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert json.loads(p.stdout)["store"]["message"] == "hey, sandbox!"


@pytest.mark.isolation
def test_follow_prints_logs_and_progress_as_they_come(tmp_path):
    wf = _workflow(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "run", "--follow", str(wf)],
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = proc.stderr.readline()           # arrives while the run still goes on
    still_running = proc.poll() is None
    err = proc.stderr.read()
    out = proc.stdout.read()
    assert proc.wait(120) == 0, err
    assert still_running and first == "progress\n"     # the hostile shapes show nothing
    lines = (first + err).splitlines()
    assert "INFO    did step 1" in lines and "INFO    did step 5" in lines
    assert any(line.startswith("progress 5/5 step") for line in lines)
    assert "\x1b" not in first + err and "pwned" in first + err    # shown, but inert
    assert out.startswith("run ")


@pytest.mark.isolation
def test_progress_bar_on_a_terminal_and_no_escape_from_the_child(tmp_path):
    wf = _workflow(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "run", str(wf)],
                            env=_env(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read()
    proc.wait(30)
    os.close(master)
    assert proc.returncode == 0, seen[-2000:]
    assert b"step" in seen and b"%" in seen            # the bar with its description
    assert b"\x1b]0;pwned" not in seen                  # the child's OSC never reached the tty
    assert out.startswith(b"run ")                      # stdout stays the summary


@pytest.mark.isolation
def test_a_long_progress_or_log_text_is_clipped_before_it_is_escaped(monkeypatch):
    """Only MAX_TEXT characters are shown, but the whole text was escaped first: a 1 MiB
    frame of DEL characters (one byte each in JSON, each escaped) cost the launcher
    ~0.3 s of CPU in printable(), 256 frames (the run's byte budget) ~80 s, from a
    child that spent almost nothing. Judged by the characters the live view escapes."""
    import io
    from sandbox.cli import live
    from sandbox.launcher.launcher import Launcher
    escaped: list[int] = []
    real = live.printable
    monkeypatch.setattr(live, "printable",
                        lambda s: escaped.append(len(s) if isinstance(s, str) else 0) or real(s))
    code = ("import os, struct, json\nfd = int(os.environ['SANDBOX_IPC_FD'])\n"
            "text = '\\x7f' * 500_000\n"
            "for t, p in [('progress', {'done': 1, 'of': 2, 'message': text}),"
            " ('log', {'level': text, 'message': text}), ('progress', {'message': [text]})]:\n"
            "    b = json.dumps({'type': t, 'payload': p}, ensure_ascii=False).encode()\n"
            "    os.write(fd, struct.pack('>I', len(b)) + b)\n")
    la = Launcher(capture_output=True)
    out = io.StringIO()
    with la, live.LiveView(la, follow=True, bar=False, stream=out):
        r = la.spawn([sys.executable, "-I", "-c", code])
    assert r.status == "ok", (r.status, r.reason)
    assert r.messages == {"progress": 2, "log": 1}
    assert out.getvalue().count("\\x7f") > 0            # shown, escaped
    assert sum(escaped) <= 4 * 2 * live.MAX_TEXT, sum(escaped)
