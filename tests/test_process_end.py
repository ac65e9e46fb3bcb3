"""Our interpreters end without their last garbage collections (sandbox.process_end),
and lose nothing by it: judged from outside each process, by what it left behind."""
from __future__ import annotations

import os
import subprocess
import sys

from sandbox.launcher.interp import helper_command

ENDING = r"""
import atexit, gc, os, sys, threading
from sandbox.process_end import ending
freeze = sys.argv[2] == "1"
out = open(sys.argv[1], "w")           # buffered, never closed by hand
print("buffered", end="", file=out)
ring = [out]; ring.append(ring)        # a reference cycle holding it
atexit.register(lambda: print("atexit", gc.get_freeze_count() > 0 or not freeze, flush=True))
t = threading.Thread(target=lambda: (threading.Event().wait(0.2), print("thread", flush=True)))
t.start()                              # not a daemon: finalization joins it
sys.stdout.write("stdout")             # unflushed
del out
sys.exit(ending(7) if freeze else 7)
"""


def _end(tmp_path, freeze: bool) -> tuple[subprocess.CompletedProcess[str], str]:
    target = tmp_path / f"out-{freeze}.txt"
    p = subprocess.run([sys.executable, "-c", ENDING, str(target), "1" if freeze else "0"],
                       capture_output=True, text=True, timeout=60)
    return p, target.read_text()


def test_ending_keeps_exit_code_atexit_threads_and_stdout(tmp_path):
    """The exit code is the one given; atexit handlers and non-daemon threads still run
    after the freeze; the standard streams are flushed."""
    p, _ = _end(tmp_path, freeze=True)
    assert p.returncode == 7, p.stderr
    assert p.stdout.startswith("stdout"), p.stdout
    assert "thread" in p.stdout and "atexit True" in p.stdout, p.stdout


def test_what_ending_skips_is_a_cycle_s_collection(tmp_path):
    """The one thing a frozen exit does not do: collect a reference cycle that existed
    at the freeze. A buffered file held only by such a cycle is then never flushed,
    where an ordinary exit's collection flushes it (the control below). So every file
    our processes write is closed where it is written (`with open`), never left to
    the exit: this test says what the freeze costs, so that nobody relies on it."""
    plain, plain_text = _end(tmp_path, freeze=False)
    frozen, frozen_text = _end(tmp_path, freeze=True)
    assert (plain.returncode, frozen.returncode) == (7, 7)
    assert plain_text == "buffered"
    assert frozen_text == ""


def test_the_console_script_and_every_helper_end_through_it():
    """`sandbox` (pyproject's console script, `python -m sandbox`) and the helper
    interpreters (exec'd monitor, fork server, history) all call `ending`."""
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")) as f:
        assert 'sandbox = "sandbox.thin.entry:run"' in f.read()
    cmd = helper_command("sandbox.monitor.main")
    assert "ending(main())" in cmd[-1], cmd


def test_python_m_sandbox_exits_with_its_code(tmp_path):
    """Bad input to `python -m sandbox` keeps its exit code (2) and its one line."""
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "sandbox", "policy", "check",
                        str(tmp_path / "missing.toml")], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
