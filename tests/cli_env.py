"""The environment of a `sandbox` CLI test: cold (no daemon), or served by a daemon of
the test's own (a SANDBOX_HOME of its own, so no other daemon on the machine serves it).

Shared by the tests of the CLI's lines after a run (test_host_tmp_arguments,
test_workdir_note), which check both paths.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

SANDBOX = [sys.executable, "-m", "sandbox"]


def cli_env(home: str | None = None) -> dict[str, str]:
    """The caller's environment without SANDBOX_*: cold, or (`home`) through its daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["SANDBOX_DAEMON"] = "0"
    if home is not None:
        env.update(SANDBOX_HOME=home, SANDBOX_DAEMON="1")
    return env


@contextlib.contextmanager
def own_daemon(home: str) -> Iterator[dict[str, str]]:
    """A daemon of `home` for the block; yields the environment that uses it."""
    env = cli_env(home)
    start = subprocess.run([*SANDBOX, "daemon", "start"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        yield env
    finally:
        subprocess.run([*SANDBOX, "daemon", "stop"], env=env, capture_output=True, timeout=60)


def served(env: dict[str, str]) -> int:
    """How many runs the daemon of `env` has served."""
    status = subprocess.run([*SANDBOX, "daemon", "status"], env=env, capture_output=True,
                            text=True, timeout=60).stdout
    return int(status.split(" served ")[1].split()[0])
