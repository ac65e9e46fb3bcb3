"""A program cannot make the monitor that lends it the caller's stdin spin.

The lending of a caller's pipe (sandbox/monitor/stdin_lend.py) waited for the
program's stdin pipe to be *writable* as the sign that it had read everything
lent: true of a one-page pipe, which the monitor makes, but the program holds
the read end of that pipe and may resize it (F_SETPIPE_SZ). Grown to 16 pages
and left unread, the pipe stayed writable and not empty, and the relay thread
looked again at once, for the run's whole life: a sleeping strict sandbox (0.02
s of CPU) kept the monitor at 87% of a CPU, outside every limit of the run and,
on the warm path, in the one relay thread every run of the daemon shares (found
by an attack probe, 2026-12-07).

Judged from the host: the CPU time of the trusted processes (the CLI and its
monitor; the daemon and its warm monitor host), read from /proc while the
program sleeps, and what the caller's next reader gets after the run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANDBOX = [sys.executable, "-m", "sandbox"]
MARK = "lend-cost-probe"
SLEEP = 3.0
WINDOW = 2.0

GROW = f"""
import fcntl, os, sys, time
assert os.read(0, 1)                  # the first page is lent
fcntl.fcntl(0, 1031, 1 << 16)         # F_SETPIPE_SZ: its own stdin pipe, 16 pages
if sys.argv[2] == "fill":             # and more than a page in it, so it cannot shrink
    import struct, termios
    w = os.open("/proc/self/fd/0", os.O_WRONLY | os.O_NONBLOCK)
    for _ in range(10000):            # before the monitor puts it back to one page
        try:
            fcntl.fcntl(0, 1031, 1 << 16)
            os.write(w, b"x" * 8192)
        except OSError:
            pass
        if struct.unpack("i", fcntl.ioctl(0, termios.FIONREAD, b"    "))[0] > 4096:
            break
    else:
        sys.exit("never more than a page")
os.write(1, b"ready\\n")
time.sleep({SLEEP})
if sys.argv[2] != "fill":
    got = 1
    while got < 100:
        got += len(os.read(0, 100 - got))
"""


def _children() -> dict[int, list[int]]:
    from sandbox.monitor.tree import children_map
    return children_map()


def _trusted_cpu(top: int) -> float:
    """CPU seconds of `top` and its descendants but the program's own processes."""
    kids, total, todo = _children(), 0, [top]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if MARK.encode() in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])     # utime, stime
        except (OSError, IndexError):
            pass
    return total / tick


def _run(argv: list[str], env: dict[str, str], top_of) -> tuple[float, bytes, int]:
    """Run `argv` with a pipe of numbered lines as stdin; returns the trusted CPU spent
    while the program slept, what is left in the pipe after the run, and the exit code."""
    data = b"".join(b"%05d\n" % i for i in range(9000))      # 54,000 bytes: one pipe
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=r, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
        top = top_of(proc)
        before = _trusted_cpu(top)
        time.sleep(WINDOW)
        spent = _trusted_cpu(top) - before
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = b""
    while chunk := os.read(r, 65536):
        left += chunk
    os.close(r)
    # what it read is taken (a program that wrote into its own pipe may seem to have
    # read less: never more than it was lent is taken)
    assert left == data[100:] or (b"fill" in argv[-1].encode() and data.endswith(left)
                                  and len(data) - len(left) <= 4096), (len(left), err[-2000:])
    return spent, left, proc.returncode


def _program(how: str = "grow") -> list[str]:
    return ["--policy", "strict", "--", "python3", "-c", GROW, MARK, how]


@pytest.mark.parametrize("how", ["grow", "fill"])
def test_a_grown_stdin_pipe_does_not_make_the_cold_monitor_spin(how):
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    spent, _, code = _run([*SANDBOX, "exec", *_program(how)], env, lambda p: p.pid)
    assert code == 0
    # spinning it took 1.7 s of these 2; waiting, a few hundredths
    assert spent < 0.4 * WINDOW, f"the monitor spent {spent:.2f} s of CPU in {WINDOW} s"


def test_a_grown_stdin_pipe_does_not_make_the_warm_monitor_spin(tmp_path):
    from sandbox.thin import control as D
    home = str(tmp_path / "home")
    os.mkdir(home, 0o700)
    os.mkdir(os.path.join(home, "daemon"), 0o700)
    sock = os.path.join(home, "daemon", "sock")
    denv = {"SANDBOX_HOME": home, "HOME": os.environ.get("HOME", "/"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    daemon = subprocess.Popen([sys.executable, "-I", "-m", "sandbox.thin.daemon", sock],
                              env=denv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while D.status(sock) is None:
            assert daemon.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        env = {**os.environ, "SANDBOX_HOME": home, "SANDBOX_DAEMON": "1"}
        spent, _, code = _run([*SANDBOX, "exec", *_program()], env, lambda p: daemon.pid)
        assert code == 0
        assert spent < 0.4 * WINDOW, f"the daemon spent {spent:.2f} s of CPU in {WINDOW} s"
    finally:
        D.stop(sock)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
