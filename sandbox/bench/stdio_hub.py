"""Memory of the stdio relays in one process shared by many runs (issue 14).

``python -m sandbox.bench.stdio_hub [N]`` attaches N relays (`StdioRelay`) to
this process's hub, each with a child standing for a sandbox, and prints the
process's resident memory growth per relay:

- idle: every child (``sleep``) holds its stdin, stdout and stderr and writes
  nothing;
- blocked: every child writes without end (``cat /dev/zero``) to a caller
  that reads nothing: each pipe is full and each output stream holds what it
  read but could not deliver (at most one chunk);
- flowing: the same children while this process reads every caller pipe
  (`VOLUME` bytes each), sampled as it goes; the largest growth counts.

Growth is measured from a baseline taken after the hub's thread exists (one
thread per process, not per run). The monitor's budget is 64 KiB per sandbox.
"""
from __future__ import annotations

import os
import selectors
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from sandbox.monitor import stdio_hub
from sandbox.monitor.stdio import StdioRelay, StdioSpec

VOLUME = 4 << 20     # bytes read per relay in the flowing phase


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Attached:
    relay: StdioRelay
    child: subprocess.Popen
    stdin_w: int
    out_r: int
    err_r: int


@dataclass
class Figures:
    count: int
    idle_kib: float = 0.0
    blocked_kib: float = 0.0
    flowing_kib: float = 0.0
    threads: int = 0
    delivered: list[int] = field(default_factory=list)


def sync(hub: stdio_hub.StdioHub) -> None:
    """Return once the hub has run everything asked of it so far."""
    done = threading.Event()
    hub.call(done.set)
    done.wait(30)


def attach(cmd: list[str]) -> Attached:
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    relay = StdioRelay(StdioSpec(), (in_r, out_w, err_w))
    sb = relay.sandbox
    child = subprocess.Popen(cmd, stdin=sb[0], stdout=sb[1], stderr=sb[2], close_fds=True)
    relay.started()
    return Attached(relay, child, in_w, out_r, err_r)


def end(runs: list[Attached]) -> None:
    for a in runs:
        a.child.kill()
        a.child.wait()
        a.relay.finish(0.5)
        for fd in (a.stdin_w, a.out_r, a.err_r):
            os.close(fd)


def measure(count: int) -> Figures:
    hub = stdio_hub.shared()
    end([attach(["true"])])          # the hub's thread and the modules, once per process
    fig = Figures(count)
    base = rss_kib()
    idle = [attach(["sleep", "1000"]) for _ in range(count)]
    sync(hub)
    fig.idle_kib = (rss_kib() - base) / count
    end(idle)
    base = rss_kib()
    busy = [attach(["cat", "/dev/zero"]) for _ in range(count)]
    for _ in range(3):               # let every pipe fill and every stream stall
        sync(hub)
        threading.Event().wait(0.2)
    fig.blocked_kib = (rss_kib() - base) / count
    fig.threads = threading.active_count()
    fig.delivered, peak = _read_all(busy, base)
    fig.flowing_kib = (peak - base) / count
    end(busy)
    return fig


def _read_all(runs: list[Attached], base: int) -> tuple[list[int], int]:
    """Read VOLUME bytes from every run's stdout, sampling this process's RSS."""
    sel = selectors.DefaultSelector()
    got = {a.out_r: 0 for a in runs}
    for a in runs:
        sel.register(a.out_r, selectors.EVENT_READ)
    peak, n = base, 0
    while sel.get_map():
        for key, _ in sel.select(30):
            data = os.read(key.fd, min(65536, VOLUME - got[key.fd]))
            got[key.fd] += len(data)
            if not data or got[key.fd] >= VOLUME:
                sel.unregister(key.fd)
            n += 1
            if n % 64 == 0:
                peak = max(peak, rss_kib())
    sel.close()
    return [got[a.out_r] for a in runs], max(peak, rss_kib())


def main(argv: list[str]) -> int:
    from sandbox.bench.count_arg import count_arg
    count = count_arg(argv, 50, "python -m sandbox.bench.stdio_hub [RUNS]")
    fig = measure(count)
    print(f"stdio relays in one process: {count} runs, {fig.threads} threads "
          f"(main + hub) while relaying")
    print(f"  resident growth per run: idle {fig.idle_kib:.1f} KiB, "
          f"blocked reader {fig.blocked_kib:.1f} KiB, "
          f"flowing {fig.flowing_kib:.1f} KiB (budget 64 KiB)")
    print(f"  delivered: {min(fig.delivered)}..{max(fig.delivered)} bytes per run "
          f"of {VOLUME}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
