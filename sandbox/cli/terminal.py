"""Is `sandbox exec` run at an interactive terminal? Then it acts as with `-t`.

WHY: run directly at a terminal, a program's stdin, stdout and stderr are that
terminal: `ls` prints columns, `python3` gives its prompt, `getpass` turns
echo off. Relayed through pipes, none of that held (`ls` printed one name a
line, a password was echoed), where bubblewrap and firejail hand the program
the terminal itself. Handing over the caller's terminal would let the program
type into the caller's shell (TIOCSTI), so the sandbox gives it a pty of its
own, as `-t` does.

Only when it is what a direct run would see: stdin, stdout and stderr are all
the caller's controlling terminal and the caller is the terminal's foreground
job. `2>log`, a pipe, or `&` (a background job must not put the shell's
terminal in raw mode) keep the pipes. `--no-tty` keeps them always.

The caller is this process on the cold path; on the warm path it is the thin
client, whose pid the daemon has from SO_PEERCRED (this process is a fork of
the daemon, which has no controlling terminal, so it must look at the client's).
"""
from __future__ import annotations

import os
import stat

from sandbox.launcher.signals import proc_terminal


def _device(tty_nr: int) -> tuple[int, int]:
    """(major, minor) of /proc's tty_nr (the kernel's new_encode_dev)."""
    return (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)


def interactive(caller_pid: int) -> bool:
    """True when fds 0, 1 and 2 are the controlling terminal of `caller_pid` and
    `caller_pid` is in its foreground process group."""
    rdev = None
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        if not stat.S_ISCHR(st.st_mode) or not os.isatty(fd):
            return False
        if rdev is not None and st.st_rdev != rdev:
            return False
        rdev = st.st_rdev
    got = proc_terminal(caller_pid)
    if rdev is None or got is None:
        return False
    pgrp, tty_nr, tpgid = got
    return tpgid > 0 and tpgid == pgrp and _device(tty_nr) == (os.major(rdev), os.minor(rdev))
