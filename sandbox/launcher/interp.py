"""The command line of our own helper interpreters (an exec'd monitor, a fork server, a
forked process's run-history operation):
``python -I -S`` with the import path written out, instead of ``python -I -m``.

Why: `site` is most of a bare interpreter's start-up here (``python -I -c pass``
48-52 ms against 16 ms with ``-S``, 20 runs each, load 2.5): it reads every
``.pth`` file of site-packages, and an editable install's finder imports pathlib,
urllib.parse, fnmatch and re before anything of ours runs. A cold `sandbox exec`
starts one such helper per run (the monitor), so its start-up is on the path of
every cold run.

What the helper loses by skipping `site` is only what `site` would have put on
`sys.path`, so the launcher, which ran `site`, writes that part out: the
directory holding the `sandbox` package it runs itself (first, so the helper
imports the very same code, which an editable install's finder would map), then
its own `sys.path` from the first site-packages directory on (site-packages and
what their ``.pth`` files added; never the caller's script directory,
PYTHONPATH or the user's site-packages, which come before it and which ``-I``
leaves out too). A Python action forked from the helper imports from that
same path. Not kept: import hooks a ``.pth`` file installs (setuptools'
distutils shim). A launcher that itself runs without `site` (``-S``) has nothing
to write out: its helpers start with ``-I -m`` as before.
"""
from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys


@functools.cache
def site_path() -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(entries before the interpreter's own, entries after them) for a helper started
    with ``-S``, or None when this process has no `site` to copy."""
    if sys.flags.no_site or "site" not in sys.modules:
        return None
    import site
    here = [p for p in site.getsitepackages() if p in sys.path]
    if not here:
        return None
    first = min(sys.path.index(p) for p in here)
    tail = tuple(p for p in sys.path[first:] if isinstance(p, str) and os.path.isabs(p))
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (os.path.dirname(package),), tail


def helper_command(module: str, entry: str = "main") -> list[str]:
    """How to start `module` as a helper interpreter that runs its `entry` (a function
    of no argument that returns the exit code: a fork server's or monitor's ``main``,
    the run history's ``serve_one``), ending without its last garbage collections
    (sandbox.process_end)."""
    call = (f"from {module} import {entry}; from sandbox.process_end import ending; "
            f"sys.exit(ending({entry}()))")
    paths = site_path()
    if paths is None:
        return [sys.executable, "-I", "-c", f"import sys; {call}"]
    head, tail = paths
    return [sys.executable, "-I", "-S", "-c",
            f"import sys; sys.path[:0] = {list(head)!r}; sys.path += {list(tail)!r}; {call}"]


def monitor_env(**extra: str) -> dict[str, str]:
    """The whole environment of a fork server or exec'd monitor: never the caller's.
    `-I` makes the interpreter ignore PYTHON* variables anyway; nothing else is
    needed (the run's own environment travels in the spec)."""
    env = {"SANDBOX_LAUNCHER_PID": str(os.getpid())}
    if os.environ.get("SANDBOX_AUDIT_FAST") == "0":   # the audit's Python loop only
        env["SANDBOX_AUDIT_FAST"] = "0"                # (monitor/notify_fast.py; A/B runs)
    if os.environ.get("SANDBOX_STUB_C") == "0":       # the Python stub only
        env["SANDBOX_STUB_C"] = "0"                    # (sandbox/sandboxee/stub_fork.py; A/B)
    if os.environ.get("SANDBOX_MEMTRACE") == "1":     # the sandboxee's memory marks
        env["SANDBOX_MEMTRACE"] = "1"                  # (sandbox/sandboxee/memtrace.py)
    return {**env, **extra}


def exec_monitor(stdio: list[int], ipc_child: socket.socket,
                 ctl_child: socket.socket) -> "subprocess.Popen[bytes]":
    """An exec'd monitor for one run, our child: `stdio` are its 0, 1, 2; the IPC and
    control sockets' child ends keep their numbers (the spec names the IPC one)."""
    return subprocess.Popen(helper_command("sandbox.monitor.main"),
                            env=monitor_env(SANDBOX_MONITOR_FD=str(ctl_child.fileno())),
                            stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                            pass_fds=(ipc_child.fileno(), ctl_child.fileno()))
