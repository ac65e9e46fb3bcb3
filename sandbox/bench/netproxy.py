"""The allowlist proxy's cost: throughput and added connect latency (issue 18).

One program, timed *inside* itself (start-up excluded), run twice against a
server this module starts on 127.0.0.1: unsandboxed and connecting directly,
then sandboxed under ``[network] mode = "allowlist"`` (the server allowed by
its explicit address) and going through the monitor's proxy with CONNECT.

- throughput: `size` bytes (100 MB) read from one connection, MB/s;
- connect latency: `n` times open a connection, (proxied: CONNECT and its
  200), send one byte, read the server's one-byte answer; the median is
  what a client waits before the first byte of a new connection. The
  added latency is the proxied median minus the direct one.

Targets: proxied throughput >= 50% of direct, added latency <= 1 ms at p50.

The floor, measured in the same run: the same program unsandboxed through the
proxy's own relay (`sandbox.netproxy.relay.relay`, its buffers bounded as the
proxy bounds them) running in a thread here, with no sandbox, no CONNECT and no
policy: what the second hop costs by itself. On this 2-core machine the server,
the relay and the client each want a core, so the hop alone reads ~0.4x of
direct loopback (docs/benchmarks.md).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

PROGRAM = r"""
import json, socket, sys, time
port, size, n, proxied = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
via = int(sys.argv[5]) if len(sys.argv) > 5 else port   # a bare relay's port, else the server's
def open_conn():
    if not proxied:
        return socket.create_connection(("127.0.0.1", via))
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
    head = b""
    while b"\r\n\r\n" not in head:
        more = s.recv(256)
        if not more:
            raise SystemExit("proxy closed: %r" % head)
        head += more
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit("proxy refused: %r" % head)
    return s
lat = []
for i in range(n + 5):
    t = time.perf_counter()
    s = open_conn()
    s.sendall(b"P")
    s.recv(1)
    if i >= 5:
        lat.append(time.perf_counter() - t)
    s.close()
s = open_conn()
s.sendall(b"D")
buf = bytearray(1 << 20)
got = 0
t = time.perf_counter()
while got < size:
    k = s.recv_into(buf)
    if not k:
        break
    got += k
dt = time.perf_counter() - t
s.close()
lat.sort()
print(json.dumps({"bytes": got, "seconds": dt, "p50": lat[len(lat) // 2],
                  "p95": lat[int(len(lat) * 0.95)]}))
"""


class _Server:
    """Answers b"P" with one byte, and b"D" with `size` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.chunk = b"\0" * min(size, 1 << 20)   # none for the bare relay (size 0)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c:
            try:
                cmd = c.recv(1)
                if cmd == b"P":
                    c.sendall(b"K")
                elif cmd == b"D":
                    left = self.size
                    while left > 0:
                        n = c.send(self.chunk[:min(left, len(self.chunk))])
                        left -= n
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@dataclass
class _Counts:
    """What the relay counts (relay.Counts), for nobody: the figure is the client's."""
    up: int = 0
    down: int = 0
    result: str = ""


class _BareRelay(_Server):
    """The floor: each connection relayed to `upstream` by the proxy's own relay, in a
    thread of this process, outside any sandbox."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        super().__init__(0)

    def _serve(self, c: socket.socket) -> None:
        from sandbox.netproxy import relay

        with c, socket.socket() as u:
            try:
                relay.bound_buffers(c)
                relay.bound_buffers(u)
                u.connect(("127.0.0.1", self.upstream))
                relay.relay(c, u, _Counts(), None, lambda: False, lambda: False)
            except OSError:
                pass


def bench_proxy(size: int = 100_000_000, n: int = 200, repeat: int = 5) -> dict[str, Any]:
    """Medians of `repeat` interleaved runs each way (a shared machine is noisy): direct,
    through the bare relay (the floor), through the sandbox's proxy."""
    import json
    import statistics
    from dataclasses import replace
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    srv = _Server(size)
    bare = _BareRelay(srv.port)
    argv = [sys.executable, "-I", "-S", "-c", PROGRAM, str(srv.port), str(size), str(n)]
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "bare": [], "proxied": []}
    try:
        with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
            la = Launcher(capture_output=True)
            la.audit_db = os.path.join(tmp, "audit")
            pol = load_policy("default")
            pol = pol.replace(network=replace(pol.network, mode="allowlist",
                                              allow=(f"127.0.0.1:{srv.port}",)))
            for _ in range(repeat):
                for kind, tail in (("direct", ["0"]), ("bare", ["0", str(bare.port)])):
                    runs[kind].append(json.loads(subprocess.run(
                        argv + tail, capture_output=True, text=True, check=True,
                        timeout=300).stdout))
                r = la.spawn(argv + ["1"], policy=pol, output_dir=os.path.join(tmp, "out"),
                             timeout=300)
                if r.status != "ok":
                    raise RuntimeError(f"bench run failed: {r.status} {r.reason} "
                                       f"{(r.stderr or '')[-500:]}")
                runs["proxied"].append(json.loads(r.stdout or ""))
    finally:
        srv.close()
        bare.close()

    def med(kind: str, f) -> float:
        return statistics.median(f(x) for x in runs[kind])
    mbps = {k: med(k, lambda x: x["bytes"] / x["seconds"] / 1e6) for k in runs}
    p50 = {k: med(k, lambda x: x["p50"]) for k in runs}
    return {"bytes": size, "connects": n, "repeat": repeat,
            "direct_mb_per_s": round(mbps["direct"], 1),
            "proxied_mb_per_s": round(mbps["proxied"], 1),
            "throughput_ratio": round(mbps["proxied"] / mbps["direct"], 3),
            "bare_relay_mb_per_s": round(mbps["bare"], 1),
            "bare_relay_ratio": round(mbps["bare"] / mbps["direct"], 3),
            "bare_relay_connect_p50_ms": round(p50["bare"] * 1000, 3),
            "direct_connect_p50_ms": round(p50["direct"] * 1000, 3),
            "proxied_connect_p50_ms": round(p50["proxied"] * 1000, 3),
            "added_connect_p50_ms": round((p50["proxied"] - p50["direct"]) * 1000, 3),
            "all_mb_per_s": {k: [round(x["bytes"] / x["seconds"] / 1e6) for x in v]
                             for k, v in runs.items()}}


if __name__ == "__main__":
    import json
    from sandbox.bench.count_arg import count_arg
    size = count_arg(sys.argv[1:], 100_000_000, "python -m sandbox.bench.netproxy [BYTES]")
    print(json.dumps(bench_proxy(size), indent=2))
