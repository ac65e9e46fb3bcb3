"""Where a copy-on-write run's writes went (everyday probe 3, E4).

Under `default` the work directory is writable copy-on-write: `sandbox exec --
sh -c 'echo x > out.txt'` (or `make`, a code generator, a formatter) exits 0 and
the file is not in the work directory, with no word about where it is
(`${OUTPUT}/workdir.changes`): to a person at a terminal, the file was not
written. Judged from the host: what a terminal shows (a real pty), the pipes
of a script, and the files on disk; cold and through the daemon.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from cli_env import SANDBOX, cli_env as _env, own_daemon, served
from pty_run import run_on_pty

pytestmark = pytest.mark.isolation
NOTE = re.compile(rb"sandbox: note: .*?changes are in (\S+?workdir\.changes)")


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    w.mkdir()
    (w / "kept.txt").write_text("old\n")
    for path in (tmp_path, w):
        os.chmod(path, 0o755)
    return str(w)


def test_at_a_terminal_the_run_says_where_its_writes_are(work):
    out, code = run_on_pty([*SANDBOX, "exec", "--workdir", work, "--", "sh", "-c",
                            "echo new > out.txt"], _env())
    assert code == 0, out
    assert not os.path.exists(os.path.join(work, "out.txt"))   # the host's is untouched
    found = NOTE.search(out.replace(b"\r\n", b" ").replace(b"\n", b" "))
    assert found, out
    changes = found.group(1).decode()
    with open(os.path.join(changes, "out.txt")) as f:
        assert f.read() == "new\n"


def test_a_script_gets_the_note_with_v_only_and_an_unchanged_run_none(work, tmp_path):
    quiet = subprocess.run([*SANDBOX, "exec", "--workdir", work, "--", "sh", "-c",
                            "echo new > out.txt"], env=_env(), capture_output=True, timeout=120)
    assert quiet.returncode == 0 and b"sandbox: note" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([*SANDBOX, "exec", "-v", "--workdir", work, "--", "sh", "-c",
                           "echo new > out.txt"], env=_env(), capture_output=True, timeout=120)
    assert loud.returncode == 0 and NOTE.search(loud.stderr), loud.stderr
    out, code = run_on_pty([*SANDBOX, "exec", "--workdir", work, "--", "cat", "kept.txt"],
                           _env())
    assert code == 0 and b"old" in out and b"sandbox: note" not in out, out
    # strict keeps the work directory read-only: nothing to say there either
    out, code = run_on_pty([*SANDBOX, "exec", "--policy", "strict", "--workdir", work, "--",
                            "sh", "-c", "echo new > /tmp/x"], _env())
    assert code == 0 and b"sandbox: note" not in out, out


def test_the_note_comes_through_the_daemon_too(work, tmp_path):
    with own_daemon(str(tmp_path / "home")) as env:
        out, code = run_on_pty([*SANDBOX, "exec", "--workdir", work, "--", "sh", "-c",
                                "rm kept.txt"], env)
        assert code == 0 and os.path.exists(os.path.join(work, "kept.txt")), out
        assert NOTE.search(out.replace(b"\r\n", b" ").replace(b"\n", b" ")), out
        assert served(env) == 1
