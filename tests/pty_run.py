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
    step, in order, waits until the output after the previous step's text holds its
    own text, then calls its action with the terminal's descriptor. Returns the output and the exit code once the
    terminal's other side is closed (or `timeout` seconds have passed)."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.chdir(ROOT)
        os.execve(argv[0], list(argv), dict(os.environ if env is None else env))
    out = b""
    todo = list(steps)
    matched = 0     # where the previous step's text ended: a step waits for new output
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at = out.find(todo[0][0].encode(), matched) if todo else -1
        if at >= 0:
            matched = at + len(todo[0][0])
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
    else:   # the time is up: a hung command fails its test, it does not hang it
        os.kill(pid, 9)
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


def _state_of(token: str) -> str:
    """The state letter (/proc/PID/stat) of the process whose argv holds `token`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
            if argv[1:2] != [b"-c"] or argv[-1:] != [token.encode()]:
                continue     # not the program (its `sandbox exec` names it too)
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
    return "?"


def ctrl_z_stops_the_job(sandbox: Sequence[str], py: str,
                         env: Mapping[str, str] | None = None) -> None:
    """At an interactive shell, ^Z stops the foreground job, `fg` resumes it: with
    `sandbox exec` as the job and its output piped on (so no pty of its own), the
    program's process stops too, and runs again after `fg`, as directly; the program
    ran on while the shell said "Stopped"."""
    token = "sbx-job-" + os.urandom(4).hex()
    prog = f"import sys, time\nprint('up', flush=True)\nwhile True: time.sleep(0.05)\n"
    # stdin elsewhere: a warm run's relay, outside the caller's session, would read the
    # terminal while the job is stopped and take the shell's `fg` (an open finding)
    line = " ".join([*sandbox, "--", py, "-c", f'"{prog}"', token]) + " </dev/null | cat\n"
    seen: list[str] = []

    def stopped(fd: int) -> None:
        time.sleep(1)
        seen.append(_state_of(token))
        os.write(fd, b"fg\n")

    def resumed(fd: int) -> None:
        time.sleep(1)
        seen.append(_state_of(token))
        os.write(fd, b"\x03")
        time.sleep(0.5)
        os.write(fd, b"exit\n")
    shell_env = dict(os.environ if env is None else env, PS1="$ ")
    out, _ = run_on_pty(["/bin/bash", "--norc", "--noprofile", "-i"], shell_env,
                        [("$ ", type_keys(line.encode())), ("up\r\n", lambda fd: (
                            time.sleep(0.5), os.write(fd, b"\x1a"))),
                         ("Stopped", stopped), ("fg\r\n", lambda fd: None),
                         ("cat\r\n", resumed)], timeout=60)
    assert b"Stopped" in out, out
    assert seen[0] == "T" and seen[1] in ("R", "S"), (seen, out)


def stopped_job_keeps_its_terminal(sandbox: Sequence[str], py: str,
                                   env: Mapping[str, str] | None = None, *,
                                   bg: bool = False, pty: bool = False) -> None:
    """A job reading the terminal, stopped by ^Z: what is typed at the shell meanwhile
    is the shell's, and after `fg` the program reads the terminal again, as directly.
    The cold monitor, in the job's process group but not stopped with it, read the
    terminal once the shell had it back; the kernel refused that background read
    (EIO), and the relay took it for the end of input: the resumed program read EOF
    and exited 0, and the next line typed went to the shell. With `bg`, the job is
    continued in the background first: the program waits for `fg` to read (directly,
    it would stop for SIGTTIN until then), and the shell still gets its line.
    With `pty`, the output is not piped on, so the program has a pty of its own
    (sandbox exec at a terminal acts as with -t) and ^Z is a key typed into that
    pty: it stops the program there, and its caller's job with it, as directly (it
    was ignored: the program led the pty's session, an orphaned group)."""
    prog = "import sys\nprint('up', flush=True)\nfor l in sys.stdin: print('got', l.strip(), flush=True)\n"
    line = " ".join([*sandbox, "--", py, "-c", f'"{prog}"']) + ("\n" if pty else " | cat\n")
    job_line = f'"{prog}"'.replace("\n", "\r\n")[-20:]   # the end of bash's job line

    def after_a_while(keys: bytes) -> Callable[[int], object]:
        return lambda fd: (time.sleep(0.5), os.write(fd, keys))
    shell_env = dict(os.environ if env is None else env, PS1="$ ")
    out, _ = run_on_pty(["/bin/bash", "--norc", "--noprofile", "-i"], shell_env,
                        [("$ ", type_keys(line.encode())), ("up\r\n", after_a_while(b"\x1a")),
                         *([("Stopped", after_a_while(b"bg\n")), (" &", lambda fd: None)]
                           if bg else []),
                         ("$ ", after_a_while(b"echo shell-$((6 * 7))\n")),
                         ("shell-42", after_a_while(b"fg\n")),
                         ("fg\r\n", lambda fd: None),
                         ("cat\r\n" if not pty else job_line, after_a_while(b"hello\n")),
                         ("got hello", after_a_while(b"\x04")),
                         ("$ ", type_keys(b"echo rc=$?; exit\n"))], timeout=60)
    assert b"Stopped" in out and b"\ngot hello" in out and b"rc=0" in out, out
    assert b"command not found" not in out, out
