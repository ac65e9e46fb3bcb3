"""The caller's process state (protocol.CallerWire, captured by
sandbox.launcher.caller_state) applied in PID 1, before its layers: what the init and
the program inherit from it then is what a direct exec of the program inherits.

Applied first, so that the policy's own [limits] are set over the caller's soft limits
(as on the cold path, where PID 1 inherited them). Each is best effort: raising a nice
value, an oom_score_adj or a soft limit (up to the hard one) needs no privilege, the
other way may be refused, and the run then keeps what it had, as before. The signal
dispositions and mask go to the init's argv (init.c applies them to PID 2 alone: the
init itself must block every signal, and a Python action's PID 2 applies them in
`entry._program`).
"""
from __future__ import annotations

import os
import resource
import signal
from typing import Callable

from sandbox.isolation import libc
from sandbox.protocol import CallerWire

IOPRIO_WHO_PROCESS = 1


def apply(caller: CallerWire) -> None:
    if caller.umask is not None:
        os.umask(caller.umask & 0o777)
    if caller.nice is not None:
        _quietly(lambda: os.setpriority(os.PRIO_PROCESS, 0, caller.nice or 0))
    if caller.ioprio is not None:
        _quietly(lambda: libc.syscall("ioprio_set", IOPRIO_WHO_PROCESS, 0, caller.ioprio or 0))
    if caller.oom_score_adj is not None:
        _quietly(lambda: _write("/proc/self/oom_score_adj", str(caller.oom_score_adj)))
    for name, soft in caller.rlimits.items():
        res = getattr(resource, "RLIMIT_" + name, None)
        if res is not None:
            _quietly(lambda: _soft_limit(res, soft))


def _soft_limit(res: int, soft: int) -> None:
    _, hard = resource.getrlimit(res)
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
        soft = hard
    resource.setrlimit(res, (soft, hard))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _quietly(act: Callable[[], object]) -> None:
    try:
        act()
    except (OSError, ValueError):
        pass


def init_sets(caller: CallerWire) -> str:
    """The init's TTY argument's tail: ",IGNORED,BLOCKED,CLOSED" in hexadecimal (init.c);
    CLOSED: the standard descriptors PID 2 closes before its exec (std_fds)."""
    return f",{caller.sig_ignored:x},{caller.sig_blocked:x},{caller.closed_std & 7:x}"


def signal_state(caller: CallerWire) -> None:
    """A Python action's PID 2 (entry._program): the caller's ignored signals and mask,
    over the defaults it has just set."""
    for sig in range(1, signal.NSIG):
        if caller.sig_ignored >> (sig - 1) & 1 and sig not in (signal.SIGKILL, signal.SIGSTOP,
                                                              signal.SIGCHLD):
            _quietly(lambda: signal.signal(sig, signal.SIG_IGN))
    signal.pthread_sigmask(signal.SIG_SETMASK, [s for s in range(1, signal.NSIG)
                                                if caller.sig_blocked >> (s - 1) & 1])
