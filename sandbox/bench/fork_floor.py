"""The floor of a Python action's memory: what a fork of the warm template costs by itself.

A Python action's program (PID 2) is a fork of a fork of a fork of the fork
server's warm template. Every page of the template that one of those
processes writes (a reference count, an allocator's free list, an
interpreter counter) is copied, and once the stub and PID 1 have exec'd the
copies belong to PID 2 alone. This measures, outside any sandbox, the private
KiB of a process forked from a template built like the fork server's (its
PRELOAD imported and warmed, gc frozen, the allocator's free blocks plugged as
the zygote does), with the forks the sandboxee's lineage makes
(`forking.fork_single_threaded`: no at-fork hooks), by what it ran:

- ``fork``: one fork, nothing run;
- ``three_forks``: three forks whose parents exit, as stub, PID 1 and PID 2;
- ``worker``: the same, then `sandbox.sandboxee.worker` running a one-message
  action and sleeping, over a socketpair.

What a real sandbox adds to ``worker`` is the stub's decoding of the run's
`Spec` and the containment sequence in PID 1 (docs/benchmarks-journal.md). Run as ``python -m sandbox.bench.fork_floor``
(a fresh interpreter becomes the template).
"""
from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import time

from sandbox.bench.smaps import private_kib, rollup
from sandbox.sandboxee import forking

SCENARIOS = ("fork", "three_forks", "worker")


def _private(pid: int) -> int:
    return private_kib(rollup(pid))


def _leaf(scenario: str, report: int, ipc: socket.socket | None) -> None:
    os.write(report, f"{os.getpid()}\n".encode())
    if scenario.startswith("worker") and ipc is not None:
        from sandbox.sandboxee import worker
        worker.run(ipc.detach())
    time.sleep(120)


def _chain(scenario: str, report: int, ipc: socket.socket | None) -> None:
    """In the template's child: fork down to the leaf; every parent exits. Never returns."""
    try:
        if scenario == "fork":
            _leaf(scenario, report, ipc)
        for _ in range(2):
            if forking.fork_single_threaded() != 0:
                os._exit(0)
        _leaf(scenario, report, ipc)
    finally:
        os._exit(0)


def _one(scenario: str) -> int:
    from sandbox.ipc.frames import FrameDecoder, encode
    r, w = os.pipe()
    mine, theirs = socket.socketpair()
    pid = forking.fork_single_threaded()
    if pid == 0:
        os.close(r)
        mine.close()
        _chain(scenario, w, theirs)
    os.close(w)
    theirs.close()
    with os.fdopen(r) as f:
        leaf = int(f.readline())
    if leaf != pid:
        os.waitpid(pid, 0)   # the chain's first parent: gone once it forked
    try:
        if scenario.startswith("worker"):
            body = {"workflow": {"name": "floor", "imports": ["sandbox.bench.actions"], "stages": [
                {"actions": [{"name": "bench.messages", "params": {"n": 1}},
                             {"name": "bench.sleep", "params": {"seconds": 120}}]}]},
                "imports": ["sandbox.bench.actions"]}
            mine.sendall(encode("start", body))
            dec = FrameDecoder()
            while not any(m.type == "bench.tick" for m in dec.feed(mine.recv(65536))):
                pass
        time.sleep(0.5)   # the chain's parents are gone: their pages are the leaf's now
        return _private(leaf)
    finally:
        os.kill(leaf, 9)
        if leaf == pid:
            os.waitpid(pid, 0)
        mine.close()


def template_main() -> dict[str, int]:
    """In a fresh interpreter: become a template as the fork server does, then measure."""
    from sandbox.monitor import preload
    from sandbox.sandboxee import template
    preload.warm()
    gc.collect()
    gc.freeze()
    template.plug_free_blocks()
    template.plug_heap()
    _one("worker")   # discarded: the template's own first run of this code copies pages
    # that its forked leaf would then count as private
    return {s: _one(s) for s in SCENARIOS}


def measure() -> dict[str, int]:
    """Private KiB per scenario, measured in a fresh `python -I` template."""
    out = subprocess.run([sys.executable, "-I", "-m", "sandbox.bench.fork_floor", "--json"],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    res = template_main()
    print(json.dumps(res) if "--json" in sys.argv else
          "\n".join(f"{k:<18} {v:>6} KiB private" for k, v in res.items()))
