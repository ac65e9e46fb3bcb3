"""Network: `none`, `loopback`, `allowlist` or `host` (policy `[network] mode`).

`allowlist`: as `loopback`, plus the proxy's listening socket made here and
handed to the monitor (`sandbox/netproxy/inside.py`).

`none` and `loopback` rely on the new network namespace made by the namespace
layer: it starts with only `lo`, and it is down. `loopback` brings `lo` up
with one SIOCSIFFLAGS ioctl (a netlink library such as pyroute2 would cost
170 ms to import, too much for the hot path). `host` shares the caller's network and
is only ever chosen by a policy that says so.
"""
from __future__ import annotations

import fcntl
import socket
import struct

from sandbox.errors import SetupError
from sandbox.netproxy import inside   # imported before the view exists (PID 1)
from sandbox.isolation.context import ContainContext

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def bring_up(ifname: str = "lo") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", ifname.encode(), 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh", ifname.encode(), flags | IFF_UP))


def apply(ctx: ContainContext) -> None:
    mode = ctx.policy.network.mode
    if mode == "loopback":
        try:
            bring_up("lo")
        except OSError as exc:
            raise SetupError("network", f"cannot bring up lo: {exc}") from None
    elif mode == "allowlist":
        try:
            bring_up("lo")
            inside.open_and_hand_over(ctx.monitor_fd, dns=ctx.policy.network.dns)
        except OSError as exc:
            raise SetupError("network", f"allowlist: cannot set up the proxy socket: {exc}") \
                from None
    elif mode not in ("none", "host"):
        raise SetupError("network", f"unknown mode {mode!r}")
    ctx.active.append(f"network:{mode}")
