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

import pickle
import subprocess
from typing import Any

from sandbox.errors import SandboxError
from sandbox.launcher.interp import helper_command


def call(path: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`History(path).method(*args, **kwargs)` in a new interpreter: its value, or
    the exception it raised."""
    # The other end is sandbox.history.serve_one (named in a string: history imports
    # this module, and this one never imports history back), started the way every
    # helper interpreter of ours is: -I -S with the launcher's import path written out
    # (launcher/interp.py), so neither the caller's PYTHONPATH nor `site` applies.
    proc = subprocess.run(helper_command("sandbox.history", "serve_one"),
                          input=pickle.dumps((path, method, args, kwargs)),
                          stdout=subprocess.PIPE, check=False)
    try:
        ok, value = pickle.loads(proc.stdout)
    except Exception:
        raise SandboxError(f"the run history could not be reached from this forked "
                           f"process (helper exit status {proc.returncode})") from None
    if ok:
        return value
    raise value
