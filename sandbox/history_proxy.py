"""One run-history operation in a fresh interpreter.

WHY: a forked child that holds its parent's connection to the history file
(sandbox.sqlite_pin.inherited) has its parent's SQLite lock state for that file:
a connection it opened itself would write while taking none of the locks it
believes it holds, and its records were lost when the parent's close
checkpointed and deleted the WAL under it. A new process has its own state.
Only such a child pays this (a new interpreter per operation): the history is
housekeeping, and a library user's fork of a recording process is rare.

The request and the answer cross a pipe as pickles between two processes of the
same user and code (never a file another user could write).
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Any

from sandbox.errors import SandboxError


def call(path: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`History(path).method(*args, **kwargs)` in a new interpreter: its value, or
    the exception it raised."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # The other end is sandbox.history.serve_one (named in a string: history imports
    # this module, and this one never imports history back).
    proc = subprocess.run([sys.executable, "-c", "import sys; from sandbox.history import "
                           "serve_one; sys.exit(serve_one())"],
                          input=pickle.dumps((path, method, args, kwargs)),
                          stdout=subprocess.PIPE, env=env, check=False)
    try:
        ok, value = pickle.loads(proc.stdout)
    except Exception:
        raise SandboxError(f"the run history could not be reached from this forked "
                           f"process (helper exit status {proc.returncode})") from None
    if ok:
        return value
    raise value
