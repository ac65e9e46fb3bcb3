"""stdin, terminals and the program's stdio, judged from the host.

The program's stdin, stdout and stderr are pipes (or a pty) the monitor made:
never a descriptor of the caller's, whose file it could truncate, chmod,
re-time or lock (issue 11 finding 4).
"""
from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANDBOX = [sys.executable, "-m", "sandbox"]


def sandbox(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    return subprocess.run([*SANDBOX, *args], cwd=ROOT, text=True, timeout=120, **kw)


# -- stdin ---------------------------------------------------------------------------

def test_piped_stdin_reaches_the_program():
    p = sandbox("exec", "--", "cat", input="hi\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, "hi\n", "")


def test_a_repl_reads_its_input(py):
    p = sandbox("exec", "--", py, "-I", "-i", "-q", input="x = 6 * 7\nprint(x)\n")
    assert p.returncode == 0 and "42" in p.stdout, p.stderr


def test_stdin_none_is_an_immediate_end_of_input():
    # The caller's stdin stays open and silent: the program must not wait on it.
    proc = subprocess.Popen([*SANDBOX, "exec", "--stdin", "none", "--", "cat"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        out = proc.stdout.read()   # end of stream once the sandbox is gone
        assert proc.wait(timeout=60) == 0 and out == ""
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def test_the_api_takes_stdin_as_bytes_or_none(launcher):
    data = b"line\n" * 50000          # more than a pipe holds
    r = launcher.spawn(["wc", "-c"], stdin=data)
    assert (r.status, r.stdout.strip()) == ("ok", str(len(data)))
    r = launcher.spawn(["cat"])      # the default: an empty, closed stdin
    assert (r.status, r.stdout) == ("ok", "")


def test_all_output_reaches_the_caller_before_the_exit(tmp_path):
    out = tmp_path / "out"
    with open(out, "wb") as f:
        p = subprocess.run([*SANDBOX, "exec", "--", "sh", "-c",
                            "head -c 3000000 /dev/zero; echo; echo end >&2"],
                           cwd=ROOT, stdout=f, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0 and out.stat().st_size == 3000001 and p.stderr == b"end\n"


# -- the caller's descriptors stay the caller's (issue 11 finding 4) ------------------

TAMPER = r"""
import fcntl, os, stat
for fd in (0, 1, 2):
    if stat.S_ISCHR(os.fstat(fd).st_mode):
        continue   # a device (the host's /dev/null if this regressed): never touch it
    for act in (lambda: os.ftruncate(fd, 0), lambda: os.fchmod(fd, 0),
                lambda: os.utime(fd, (0, 0)),
                lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)):
        try:
            act()
        except OSError:
            pass
print("tried", flush=True)
"""


def test_the_program_cannot_touch_the_files_behind_the_callers_stdio(tmp_path, py):
    log, data = tmp_path / "service.log", tmp_path / "input.txt"
    log.write_text("earlier lines of a shared log\n")
    data.write_text("input\n")
    os.chmod(log, 0o640)
    os.chmod(data, 0o604)
    before = {p: os.stat(p) for p in (log, data)}
    with open(log, "a") as out, open(data) as inp:
        p = subprocess.run([*SANDBOX, "exec", "--", py, "-I", "-c", TAMPER], cwd=ROOT,
                           stdin=inp, stdout=out, stderr=out, timeout=120)
    assert p.returncode == 0
    assert log.read_text() == "earlier lines of a shared log\ntried\n"
    assert data.read_text() == "input\n"
    for path, st in before.items():
        now = os.stat(path)
        assert now.st_mode == st.st_mode, path
        assert now.st_mtime != 0 and now.st_atime != 0, path
    with open(log) as f:   # no lock left, and none could be taken on our file
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_api_default_stdin_is_not_the_hosts_dev_null(launcher, py):
    # Before: the launcher's own /dev/null descriptor; as root, the program owned it.
    # Only its times are tried here (a mode change would break the host if it worked).
    before = os.stat("/dev/null")
    r = launcher.spawn([py, "-I", "-c",
                        "import os\ntry:\n os.utime(0, (1, 1))\nexcept OSError: pass\n"
                        "print(os.readlink('/proc/self/fd/0'))"])
    assert r.status == "ok", r.reason
    assert os.stat("/dev/null").st_mtime == before.st_mtime
    assert r.stdout.startswith("pipe:"), r.stdout


# -- signals from the caller -----------------------------------------------------------

def test_sigterm_to_sandbox_exec_reaches_the_program():
    script = 'trap "echo got TERM; exit 5" TERM; echo ready; while :; do sleep 0.05; done'
    proc = subprocess.Popen([*SANDBOX, "exec", "--", "sh", "-c", script], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 5
        assert proc.stdout.read() == "got TERM\n"
    finally:
        proc.kill()
        proc.wait()


# -- a terminal of its own (-t) --------------------------------------------------------

def _under_pty(args: list[str], keys: bytes = b"", *, after: str = "") -> tuple[bytes, int]:
    """Run sandbox with a real pty as its terminal (33 rows, 101 columns)."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.chdir(ROOT)
        os.execv(sys.executable, [*SANDBOX, *args])
    out = b""
    deadline = time.monotonic() + 60
    sent = not keys
    while time.monotonic() < deadline:
        if not sent and after.encode() in out:
            os.write(fd, keys)
            sent = True
        ready, _, _ = select.select([fd], [], [], 1.0)
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


def test_tty_gives_the_program_its_own_terminal_with_the_callers_size():
    out, code = _under_pty(["exec", "-t", "--", "sh", "-c", "tty; stty size; exit 3"])
    lines = out.decode().replace("\r", "").splitlines()
    assert code == 3, out
    assert lines[0].startswith("/dev/pts/") and lines[1] == "33 101", out


def test_ctrl_c_on_the_terminal_interrupts_the_program():
    out, code = _under_pty(["exec", "-t", "--", "sh", "-c", "echo go; sleep 30"],
                           b"\x03", after="go")
    assert code == 130, out


def test_an_interactive_repl_on_the_terminal(py):
    out, code = _under_pty(["exec", "-t", "--", py, "-I", "-q"],
                           b"print(6 * 7)\nexit(4)\n", after=">>>")
    assert code == 4 and b"42" in out, out


def test_a_caller_with_closed_stdio_still_runs():
    # fd 0 closed at start may later name another of the launcher's files: never relayed.
    cmd = f"exec 0<&-; {sys.executable} -m sandbox exec -- sh -c 'cat; echo done >&2' 1>&-"
    p = subprocess.run(["sh", "-c", cmd], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert (p.returncode, p.stderr) == (0, "done\n")
