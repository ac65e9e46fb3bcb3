"""The signals a caller may send to its whole process group, and who does what with them.

`sandbox exec` stands in for the program, and the processes it starts (the monitor
host, its zygote, a stub, a pooled PID 1 before its setsid) sit in the caller's
process group. A signal sent to that group -- `kill -USR1 -- -PGID`, `timeout -s
ALRM`, ^C, a closed terminal's SIGHUP, a service manager stopping the group -- is the
program's: a direct run's program gets it once. So every one of them whose default
would end a process is, on our side,
  - relayed once by the launcher (sandbox.launcher.signals.Forwarder) and the thin
    clients (sandbox/thin/client.py, sandbox/_native/client.c: the same list);
  - ignored by every other process of ours in the group (zygote.ignore_group_signals),
    which would otherwise die of it (probe4 H7: SIGUSR1 and SIGUSR2, missing from an
    older hand-written list, killed the cold monitor: exit 1, the program never got it).
Left out: the faults a process raises on itself (SEGV, BUS, FPE, ILL, TRAP, SYS: a
handler that returns would run the faulting instruction again), KILL and STOP (not
catchable), and the job-control and notification signals whose default is not to
end a process (CHLD, CONT, URG, WINCH: WINCH is relayed apart, with a terminal).
"""
from __future__ import annotations

import signal

_NAMED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM",
          "SIGTERM", "SIGSTKFLT", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGIO",
          "SIGPWR")

RELAYED: tuple[int, ...] = tuple(
    [int(getattr(signal, n)) for n in _NAMED if hasattr(signal, n)]
    + list(range(int(signal.SIGRTMIN), int(signal.SIGRTMAX) + 1)))

# Ignored besides by our processes in the caller's group: a background caller's stdin
# relay reading its terminal must not stop the monitor (the read fails, EIO).
# SIGTSTP too: a ^Z at the caller's terminal stops its foreground group, and the monitor
# must stay up to relay it to the program (JOB_CONTROL).
IGNORED_BY_HELPERS: tuple[int, ...] = RELAYED + (int(signal.SIGTTIN), int(signal.SIGTTOU),
                                                 int(signal.SIGTSTP))

# Job control without a pty of the program's own (its output piped on, `-T`): a ^Z stops
# the caller's foreground group, `sandbox exec` in it, and `fg` continues it. Relayed to
# the program's process group, after which `sandbox exec` stops itself (a thin client:
# it does; its daemon's fork only relays), so the shell sees a stopped job whose
# program is stopped too, and SIGCONT resumes both (tests: ctrl_z_stops_the_job).
JOB_CONTROL: tuple[int, ...] = (int(signal.SIGTSTP), int(signal.SIGCONT))

# Python ignores these itself at start (as `subprocess` restores them for a child): a
# Python process's SIG_IGN of them says nothing of its caller's
PYTHONS_OWN: tuple[int, ...] = (int(signal.SIGPIPE), int(signal.SIGXFSZ))
