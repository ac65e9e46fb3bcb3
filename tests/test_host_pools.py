"""Host-wide kernel pools a sandbox must not drain (probe 1, F3 and F4).

The kernel counts some objects against one pool for the whole machine, with no
per-user or per-namespace share: AIO events (`fs.aio-nr` up to `fs.aio-max-nr`)
and the ptys of every devpts instance but the host's first one (`kernel.pty.nr`
up to `kernel.pty.max` less `kernel.pty.reserve`). A sandbox that takes a whole
pool for its run breaks every other user of it on the host (MariaDB, QEMU and
fio with io_setup; `script`, `ssh -t`, `expect` and other sandboxes with ptys).

Judged from the host while the sandbox holds what it got: the sandbox's program
takes all it can, says how much on stdout and waits on stdin; the test then
looks at the host (its own io_setup, the pty counter) and lets the program end.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTINS = ("strict", "default", "build", "base", "spawn_process", "spawn_middleware")
SYS_io_setup, SYS_io_destroy = 206, 207


class Held:
    """A `sandbox exec` whose program holds what it took until its stdin closes."""

    def __init__(self, policy: str, code: str, *args: str, workdir: str = ROOT,
                 opts: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "exec", "--policy", policy, *opts, "--",
             sys.executable, "-I", "-c", code, *args],
            cwd=workdir, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT})

    def __enter__(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=60)
            raise AssertionError(f"the program said nothing: {err}")
        return json.loads(line)

    def __exit__(self, *exc: object) -> None:
        _, err = self.proc.communicate("", timeout=60)
        assert self.proc.returncode == 0, err


# -- F3: the AIO pool -------------------------------------------------------------------

TAKE_AIO = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
ctx = ctypes.c_ulong(0)
r = libc.syscall(206, int(sys.argv[1]), ctypes.byref(ctx))
print(json.dumps({"ret": r, "errno": ctypes.get_errno()}), flush=True)
sys.stdin.read()
"""


def host_io_setup(nr: int) -> int:
    """0 when the host could set up an AIO context of `nr` events (destroyed at once),
    else the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    ctx = ctypes.c_ulong(0)
    if libc.syscall(SYS_io_setup, nr, ctypes.byref(ctx)) != 0:
        return ctypes.get_errno()
    libc.syscall(SYS_io_destroy, ctx)
    return 0


@pytest.mark.parametrize("policy", BUILTINS)
def test_a_sandbox_cannot_take_the_hosts_aio_pool(policy):
    with open("/proc/sys/fs/aio-max-nr") as f:
        pool = int(f.read())
    with Held(policy, TAKE_AIO, str(pool)) as got:
        host = host_io_setup(1)
    assert host == 0, f"host io_setup(1) failed with {os.strerror(host)} under {policy}"
    assert got["ret"] == -1 and got["errno"] == 1, got   # EPERM: io_setup is refused


# -- F4: the pty pool -------------------------------------------------------------------

TAKE_PTYS = """
import json, os, sys
procs, each = int(sys.argv[1]), int(sys.argv[2])
pipes = []
for _ in range(procs):
    r, w = os.pipe()
    if os.fork() == 0:
        got, err = 0, None
        try:
            while got < each:
                os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
                got += 1
        except OSError as e:
            err = e.errno
        os.write(w, json.dumps([got, err]).encode())
        os.close(w)
        sys.stdin.read()
        os._exit(0)
    os.close(w)
    pipes.append(r)
results = [json.loads(os.read(r, 100)) for r in pipes]
print(json.dumps({"opened": sum(g for g, _ in results),
                  "errors": sorted({e for _, e in results if e is not None})}), flush=True)
sys.stdin.read()
for _ in range(procs):
    os.wait()
"""


def host_ptys() -> int:
    with open("/proc/sys/kernel/pty/nr") as f:
        return int(f.read())


@pytest.mark.parametrize("policy", ["strict", "default"])
def test_a_sandbox_cannot_take_the_hosts_pty_pool(policy):
    """4 processes x 150 ptys (under strict's 256 open files each): without a bound the
    sandbox holds 600 of the host's ptys; with it, PTY_MAX and then ENOSPC."""
    from sandbox.isolation.sysview import PTY_MAX
    before = host_ptys()
    with Held(policy, TAKE_PTYS, "4", "150") as got:
        held = host_ptys() - before
    assert got["opened"] == PTY_MAX and got["errors"] == [28], got   # ENOSPC
    # other users of the machine may open or close a few meanwhile: a generous margin
    assert held <= PTY_MAX + 32, (held, got)


def test_ptys_still_work_inside():
    code = ("import os, pty; m, s = pty.openpty(); os.write(s, b'ping\\n');"
            "print(os.read(m, 64).decode().strip(), os.ttyname(s))")
    p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--policy", "strict", "--",
                        sys.executable, "-I", "-c", code], cwd=ROOT, text=True,
                       capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert (p.returncode, p.stdout) == (0, "ping /dev/pts/0\n"), p.stderr
