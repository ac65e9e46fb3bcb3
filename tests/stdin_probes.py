"""Probes of what a run leaves of its caller's stdin, shared by the cold tests
(tests/test_runner_stdio.py) and the warm ones (tests/test_thin_exec.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pipe_split(cmd: list[str], env: dict, blob: bytes, reader: str,
               pieces: list[int], tmp) -> tuple[bytes, bytes, str]:
    """`{ CMD exec -- sh -c READER > taken; cat; }` with stdin a pipe the test writes
    `blob` into in writes of `pieces` sizes (cycled): (what the program read, what
    `cat` got after it, stderr)."""
    sbx = " ".join(f"'{a}'" for a in cmd)
    taken = tmp / "taken"
    r, w = os.pipe()
    proc = subprocess.Popen(["sh", "-c", f"{sbx} exec -- sh -c '{reader}' > '{taken}'; cat"],
                            stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env)
    os.close(r)

    def write() -> None:
        at, i = 0, 0
        try:
            while at < len(blob):
                n = pieces[i % len(pieces)]
                os.write(w, blob[at:at + n])   # a blocking pipe: all of it, in order
                at, i = at + n, i + 1
        except BrokenPipeError:
            pass
        finally:
            os.close(w)

    t = threading.Thread(target=write)
    t.start()
    out, err = proc.communicate(timeout=120)
    t.join()
    return taken.read_bytes(), out, err.decode(errors="replace")


SOCKET_STDIN = """
import socket, subprocess, sys
a, b = socket.socketpair()
a.sendall(b"first\\nsecond\\nthird\\n" + b"z" * 100000)
a.shutdown(socket.SHUT_WR)
p = subprocess.run(sys.argv[1:], stdin=b, capture_output=True)
rest = b"".join(iter(lambda: b.recv(65536), b""))
sys.stdout.write(f"{p.returncode} {p.stdout!r} {rest[:13]!r} {len(rest)}")
"""


def socket_stdin_left(prefix: list[str], env: dict, reader: str) -> str:
    """Run `PREFIX sh -c READER` with stdin a stream socket holding three lines and
    100000 bytes: its exit, output, and what it left in the socket."""
    p = subprocess.run([sys.executable, "-c", SOCKET_STDIN, *prefix, "sh", "-c", reader], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=120)
    return p.stdout


def to_dev_full(prefix: list[str], env: dict, program: str,
                redirect: str = ">/dev/full") -> tuple[int, str]:
    """`PREFIX sh -c PROGRAM REDIRECT` (PREFIX empty: directly): its exit code and
    stderr, where stdout (or stderr) is /dev/full: every write fails with ENOSPC."""
    cmd = " ".join(f"'{a}'" for a in [*prefix, "sh", "-c", program])
    p = subprocess.run(["sh", "-c", f"{cmd} {redirect}"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    return p.returncode, p.stderr
