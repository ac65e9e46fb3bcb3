"""The end of one of our own interpreters: the CLI, an exec'd monitor, a fork server.

Why: CPython's finalization collects garbage over every object the process still
holds, and our processes hold the whole runtime (the launcher, the protocol, the
policy engine; the monitor's preload). Measured with the exec'd monitor's imports
(`python -I -S`, `sandbox.monitor.main` and the preload list imported, then
`sys.exit`): 16-19 ms from the last statement to the process's end, 6-7 ms when
`gc.freeze()` came first, 3.4 ms with `os._exit` (which skips everything). A cold
`sandbox exec` ends two such interpreters one after the other (the monitor, then the
CLI that waits for it), so their collections were ~20 ms of a ~200 ms run.

Freezing moves every object to the permanent generation, which no collection visits;
the rest of finalization still runs as before, in order: the join of non-daemon
threads, atexit handlers (the run directories' removal, `Launcher` finalizers), the
flush of the standard streams, each module's teardown, and the destruction of every
object whose reference count drops to zero. What is skipped is only the collection of
reference cycles that existed at the freeze, which the process's end frees anyway; a
buffered file held only by such a cycle is then never flushed
(tests/test_process_end.py), so every file of ours is closed where it is written.
Only for a process about to end: never in one that serves on (the `sandbox exec`
daemon), whose frozen garbage would stay.
"""
from __future__ import annotations

import gc
import os


def ending(code: int) -> int:
    """`code`, once the garbage collector no longer visits what this process holds."""
    gc.freeze()
    return code


# The signals a caller's shell must see `sandbox exec` die of, when the program did:
# ^C and ^\ at the terminal go to the whole foreground group, and a shell runs on after
# a child that merely exited 130 (bash's wait-and-cooperative-exit aborts a loop or a
# script only when the child died of SIGINT: probe4 M2). Any other signal's death stays
# the exit code 128+N, the table of `sandbox exec --help`.
DIE_WITH = (2, 3)   # SIGINT, SIGQUIT (x86_64 numbers; `signal` would import enum)


def die_by(sig: int) -> int:
    """End this process by `sig`, as the program ended (its disposition reset first, no
    core file for SIGQUIT); returns 128+sig if that did not end it (a caller's mask the
    program had too: then the exit code says it, as before)."""
    import resource
    import sys

    import _signal  # type: ignore[import-not-found]
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:
            pass
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (OSError, ValueError):
        pass
    _signal.signal(sig, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    return 128 + sig
