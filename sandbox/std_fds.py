"""The standard descriptors of one of our processes, held open.

Its own module, importing only `os`: the cold CLI calls it before it starts the
exec'd monitor (sandbox/launcher/early.py), and the monitor's start is on the path
of every cold run. From sandbox.monitor.stdio, whose imports (dataclasses, threading,
the relay hub) it used to share, it cost the CLI ~8 ms before that start.
"""
from __future__ import annotations

import os


def ensure_open(fd: int) -> None:
    """`fd` open: a closed standard descriptor becomes /dev/null, so nothing
    opened later takes its number and is mistaken for it."""
    try:
        os.fstat(fd)
    except OSError:
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
