"""The monitor's hooks for mode = "allowlist": start the proxy on the descriptor PID 1
sent, record each connection in the run's audit store, summarise at the end.

Called by the Supervisor (two lines there: on the setup socket's "proxy"
message, and before the audit loop finishes), so the start path can change
without this module knowing it. The audit loop is the one the run already
has (mode != host always prepares one for the UNIX-socket broker); its
store gets one record per attempt: operation "connect", syscall "proxy",
path "HOST:PORT", flags with the protocol, resolved addresses, the address
connected to, bytes up and down and the duration; with dns = true one record
per question to the stub (operation "resolve", syscall "dns").
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any

from sandbox.netproxy.rules import Allowlist
from sandbox.netproxy.server import ConnRecord, ProxyServer, lookup

TARGETS_CAP = 10_000       # distinct targets counted for the summary


class ProxyRun:
    def __init__(self, supervisor: Any, fds: list[int]) -> None:
        self.sup = supervisor
        policy = supervisor.ctx.policy
        self.allowlist = Allowlist.from_policy(policy.network)
        self.budget = policy.limits.monitor_cpu
        self.lock = threading.Lock()
        self.connections = self.allowed = self.denied = 0
        self.up = self.down = 0
        self.queries = 0
        self.targets: dict[str, int] = {}
        self.denied_targets: list[str] = []
        from sandbox.monitor.cost import ThreadMeter
        self.meter = ThreadMeter()      # this run's proxy threads (the process is shared)
        lst = socket.socket(fileno=fds[0])
        self.server = ProxyServer(lst, self.allowlist, self._record, self._over_budget,
                                  meter=self.meter).start()
        self.dns: Any = None
        if policy.network.dns and len(fds) > 1:
            from sandbox.netproxy.dnsstub import DnsStub
            self.dns = DnsStub(socket.socket(fileno=fds[1]), self.allowlist, self._record_dns,
                               lookup, meter=self.meter).start()
        for extra in fds[2 if self.dns is not None else 1:]:
            os.close(extra)

    def _loop(self) -> Any:
        return getattr(self.sup, "listener", None) or getattr(self.sup, "_pending_loop", None)

    def cpu_used(self) -> float:
        """CPU of this run's proxy threads so far (never the shared process's)."""
        return self.meter.total()

    def _over_budget(self) -> bool:
        if self.budget is None:
            return False
        if getattr(self.sup, "ctx", None) is None:
            return False      # the run is over: its supervisor let go of its parts
        loop = self._loop()   # its notifications, writer, broker and this proxy together
        used = loop.cpu_used() if hasattr(loop, "cpu_used") else self.cpu_used()
        if used <= self.budget:
            return False
        self.sup.on_monitor_budget()
        return True

    def _record(self, rec: ConnRecord) -> None:
        target = _target(rec.host, rec.port)
        with self.lock:
            self.connections += 1
            if rec.allowed:
                self.allowed += 1
            else:
                self.denied += 1
                if len(self.denied_targets) < 10 and target not in self.denied_targets:
                    self.denied_targets.append(target)
            self.up += rec.up
            self.down += rec.down
            if target in self.targets or len(self.targets) < TARGETS_CAP:
                self.targets[target] = self.targets.get(target, 0) + 1
        loop = self._loop()
        if loop is not None and hasattr(loop, "record_net"):
            loop.record_net(rec.pid, target, rec.flags_text(), rec.allowed, rec.rule,
                            rec.result)

    def _record_dns(self, name: str, flags: str, allowed: bool, rule: str,
                    result: str) -> None:
        with self.lock:
            self.queries += 1
        loop = self._loop()
        if loop is not None and hasattr(loop, "record_net"):
            loop.record_net(0, name, flags, allowed, rule, result, op="resolve", name="dns")

    def stop(self) -> None:
        """The sandbox is gone: stop serving; the summary goes to the audit loop."""
        self.server.stop()
        if self.dns is not None:
            self.dns.stop()
        loop = self._loop()
        if loop is not None:
            loop.net_summary = self.summary()
            loop.proxy_cpu = self.cpu_used()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            tops = sorted(self.targets.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            return {"connections": self.connections, "allowed": self.allowed,
                    "denied": self.denied, "bytes_up": self.up, "bytes_down": self.down,
                    "targets": [[t, n] for t, n in tops],
                    "denied_targets": list(self.denied_targets), "dns_queries": self.queries}


def _target(host: str, port: int) -> str:
    if not host:
        return "?"
    h = host if ":" not in host or host.startswith("[") else f"[{host}]"
    return f"{h[:255]}:{port}"


def start(supervisor: Any, fds: list[int]) -> ProxyRun:
    return ProxyRun(supervisor, fds)
