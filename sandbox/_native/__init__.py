"""Compiled helpers of the sandbox (built at install by setup.py's `build_native`).

`sandbox-init` (init.c) is PID 1 of every sandbox: it reaps orphans, forwards
signals to the program and reports the program's real wait status. It is a
static executable, opened by the sandboxee before the mount view exists and
started with execveat(2), so it depends on nothing the policy grants.
"""
from __future__ import annotations

import os

from sandbox.errors import SetupError

INIT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox-init")


def open_init() -> int:
    """A descriptor of the init binary for execveat, taken before the view is built."""
    try:
        return os.open(INIT_PATH, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError("init", f"the sandbox's init {INIT_PATH} is missing ({exc.strerror}): "
                                 "reinstall the package (pip install -e . builds it with gcc)"
                         ) from None
