"""What a dead zygote costs: ``python -m sandbox.bench.zygote [ROUNDS]``.

Kills the zygote of a Launcher's monitor host (sandbox.monitor.zygote) ROUNDS
times and times `spawn(["true"])` before the death, the first run after it (the
host starts a new zygote by fork+exec and warms it) and the second; prints the
zygote's memory (RSS, PSS, private) forked and exec'd (docs/architecture.md,
"When the zygote dies").
"""
from __future__ import annotations

import os
import select
import signal
import statistics
import sys
import time

from sandbox.launcher.launcher import Launcher
from sandbox.monitor.tree import children_map


def zygote_of(launcher: Launcher) -> int:
    server = launcher.forkserver_pid or 0
    for pid in children_map().get(server, []):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return pid
        except OSError:
            continue
    raise RuntimeError("no live zygote")


def memory_kib(pid: int) -> tuple[int, int, int]:
    """RSS, PSS and private (USS) of `pid`, KiB."""
    got: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                got[key] = int(rest.split()[0])
    return got["Rss"], got["Pss"], got["Private_Clean"] + got["Private_Dirty"]


def _kill(pid: int) -> None:
    """SIGKILL the zygote (by pidfd) and wait until it is dead (a zombie: the host reaps)."""
    fd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [])   # readable once it has exited
    finally:
        os.close(fd)


def _timed(launcher: Launcher) -> float:
    t = time.monotonic()
    r = launcher.spawn(["true"])
    if r.status != "ok":
        raise RuntimeError(f"run failed: {r.reason}")
    return time.monotonic() - t


def main(argv: list[str]) -> int:
    from sandbox.bench.count_arg import count_arg
    rounds = count_arg(argv, 5, "python -m sandbox.bench.zygote [ROUNDS]")
    before: list[float] = []
    first: list[float] = []
    second: list[float] = []
    with Launcher() as launcher:
        for _ in range(3):
            _timed(launcher)
        print("forked zygote  RSS/PSS/private KiB:", *memory_kib(zygote_of(launcher)))
        for _ in range(rounds):
            before += [_timed(launcher) for _ in range(3)]
            _kill(zygote_of(launcher))
            first.append(_timed(launcher))
            second.append(_timed(launcher))
        time.sleep(1.0)   # the spare and pools refilled: their pages shared again
        print("exec'd zygote  RSS/PSS/private KiB:", *memory_kib(zygote_of(launcher)))

    def ms(xs: list[float]) -> str:
        return (f"median {statistics.median(xs) * 1e3:.0f} ms "
                f"({min(xs) * 1e3:.0f}-{max(xs) * 1e3:.0f}, n={len(xs)})")
    print("run before the death:     ", ms(before))
    print("first run after the death:", ms(first))
    print("second run after:         ", ms(second))
    print("load average:", open("/proc/loadavg").read().split()[:3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
