"""The state directory is made one way, and never by creating a HOME that does not exist.

A system user's HOME is often ``/nonexistent``; root running with it once
created a root-owned ``/nonexistent`` that made every later
``/nonexistent/...`` path writable (and turned tests that rely on such paths
being missing into lies). Every directory under the state directory is made
by `prepare.state_subdir` / `private_dir`, which never creates a top-level
directory.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from sandbox.errors import InputError


@pytest.fixture
def missing_home(monkeypatch):
    top = f"/sbx-missing-home-{os.getpid()}-{time.monotonic_ns()}"
    assert not os.path.lexists(top)
    monkeypatch.setenv("HOME", top)
    monkeypatch.delenv("SANDBOX_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    yield top
    assert not os.path.lexists(top), f"{top} was created"


def test_state_subdirs_are_never_made_under_a_missing_home(missing_home):
    from sandbox.launcher.prepare import run_output_dir, state_subdir
    for make in (lambda: state_subdir("native"), lambda: run_output_dir("0" * 32)):
        with pytest.raises(InputError):
            make()


def test_history_is_never_made_under_a_missing_home(missing_home):
    from sandbox.history import History
    with pytest.raises(InputError):
        History()._connect(create=True)


def test_the_cli_says_so_in_one_line(missing_home):
    p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--", "/bin/true"],
                       env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert p.returncode == 125, p.stderr
    assert len(p.stderr.splitlines()) == 1 and missing_home in p.stderr, p.stderr
