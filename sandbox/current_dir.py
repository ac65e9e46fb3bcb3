"""The caller's current directory, or an error a user can act on when it is gone.

Why: `rm -rf` of the directory a shell still sits in leaves getcwd() failing with
ENOENT, whose message ("[Errno 2] No such file or directory") names nothing. The
CLI takes the current directory as the working directory, as ${WORKDIR}, and as the
base of a relative policy path, so every one of those asks here.
"""
from __future__ import annotations

import os

from sandbox.errors import InputError

GONE = ("the current directory no longer exists (deleted or moved): cd to one that does, "
        "or name one with --workdir")


def current_dir() -> str:
    """os.getcwd(), or InputError(GONE) when the directory was removed."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise InputError(GONE) from None
