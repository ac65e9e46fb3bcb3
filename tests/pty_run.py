"""Run a command with a real pty as its terminal, and read all it writes there.

Shared by the tests of `sandbox exec -t` on the cold path (test_runner_stdio)
and on the thin client (test_thin_exec): both drive the command as a user at a
terminal would (keys typed, the window resized) once it has printed something.
"""
from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import time
from typing import Callable, Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Step = tuple[str, Callable[[int], object]]


def type_keys(keys: bytes) -> Callable[[int], object]:
    """A step's action: type `keys` on the terminal."""
    return lambda fd: os.write(fd, keys)


def run_on_pty(argv: Sequence[str], env: Mapping[str, str] | None = None,
               steps: Sequence[Step] = (), *, rows: int = 33, columns: int = 101,
               timeout: float = 60.0) -> tuple[bytes, int]:
    """Run `argv` (from the checkout's root) on a new pty of `rows` x `columns`; each
    step, in order, waits until the output holds its text, then calls its action
    with the terminal's descriptor. Returns the output and the exit code once the
    terminal's other side is closed (or `timeout` seconds have passed)."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.chdir(ROOT)
        os.execve(argv[0], list(argv), dict(os.environ if env is None else env))
    out = b""
    todo = list(steps)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if todo and todo[0][0].encode() in out:
            todo.pop(0)[1](fd)
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:   # EIO: the child side is closed
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return out, os.waitstatus_to_exitcode(status)


ISATTY = "import os; print('tty' if all(os.isatty(i) for i in range(3)) else 'pipes')"
GETPASS = "import getpass; print('got', len(getpass.getpass()))"


def at_a_terminal(sandbox: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """`sandbox exec` without -t at an interactive terminal acts as with -t, as a direct
    run sees a terminal (here `ls` printed one name a line and a password typed at a
    getpass prompt was echoed); --no-tty, or stderr sent elsewhere, keeps pipes."""
    def run(*extra: str, code: str = ISATTY, wrap: str = 'exec "$@"',
            steps: Sequence[Step] = ()) -> bytes:
        out, status = run_on_pty(["/bin/sh", "-c", wrap, "sh", *sandbox, "exec", *extra,
                                  "--", "python3", "-c", code], env, steps)
        assert status == 0, out
        return out.replace(b"\r\n", b"\n")
    assert run() == b"tty\n"
    assert run("--no-tty") == b"pipes\n"
    assert run(wrap='exec "$@" 2>/dev/null') == b"pipes\n"
    said = run(code=GETPASS, steps=[("Password:", type_keys(b"hunter2\n"))])
    assert b"got 7" in said and b"hunter2" not in said, said
