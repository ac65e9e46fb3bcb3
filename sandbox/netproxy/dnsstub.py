"""The resolver stub of mode = "allowlist" with dns = true, served by the monitor.

PID 1 binds a UDP socket at 127.0.0.1:53 in the sandbox's network namespace
and hands it over with the proxy's (`inside.py`); the view's /etc/resolv.conf
names it. The monitor answers from outside:

- a question whose name no name entry of the allowlist admits (any port) is
  answered REFUSED **without any lookup** on the host: a query name is data
  (DNS exfiltration), and only names the policy already allows ever reach
  the host's resolver;
- an admitted name is resolved on the host; A and AAAA answers carry only
  addresses `rules.Allowlist` accepts for that name on some port of its entry
  (deny_private holds here too), with a short TTL; other types get an empty
  answer.

Bounds: one query per datagram of at most 512 bytes, at most `RATE` queries a
second (more are dropped: a client retries), lookups on the stub's one thread.
Each query is a record (operation "resolve", syscall "dns").
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from typing import Any, Callable

from sandbox import fdwait
from sandbox.netproxy.rules import Allowlist, normalize_name, parse_addr

MAX_QUERY = 512
RATE = 50                     # queries per second, then dropped
TTL = 30
QTYPE_A, QTYPE_AAAA = 1, 28
RCODE_OK, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 1, 3, 5


class DnsError(ValueError):
    pass


def parse_query(data: bytes) -> tuple[int, int, str, int, bytes]:
    """(id, flags, name, qtype, question bytes) of a one-question query."""
    if len(data) < 12 or len(data) > MAX_QUERY:
        raise DnsError("size")
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", data[:12])
    if flags & 0x8000 or qd != 1:
        raise DnsError("not one question")
    labels, p = [], 12
    while True:
        if p >= len(data):
            raise DnsError("truncated name")
        n = data[p]
        if n == 0:
            p += 1
            break
        if n & 0xC0:
            raise DnsError("compressed question")
        label = data[p + 1:p + 1 + n]
        if len(label) != n:
            raise DnsError("truncated label")
        try:
            labels.append(label.decode("ascii"))
        except UnicodeDecodeError:
            raise DnsError("non-ASCII label") from None
        p += 1 + n
    if p + 4 > len(data):
        raise DnsError("truncated question")
    qtype, _qclass = struct.unpack(">HH", data[p:p + 4])
    return qid, flags, ".".join(labels), qtype, data[12:p + 4]


def answer(qid: int, flags: int, question: bytes, rcode: int, qtype: int = 0,
           addrs: list[str] = ()) -> bytes:  # type: ignore[assignment]
    rd = flags & 0x0100
    head = struct.pack(">HHHHHH", qid, 0x8000 | rd | 0x0080 | rcode, 1,
                       len(addrs), 0, 0)
    out = head + question
    for a in addrs:
        raw = ipaddress.ip_address(a).packed
        out += struct.pack(">HHHIH", 0xC00C, qtype, 1, TTL, len(raw)) + raw
    return out


class DnsStub:
    def __init__(self, sock: socket.socket, allowlist: Allowlist,
                 record: Callable[[str, str, bool, str, str], None],
                 resolve: Callable[[str, int], list[str]], meter: Any = None) -> None:
        self.sock, self.allowlist, self.record, self.resolve = sock, allowlist, record, resolve
        self.stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.window, self.count = 0.0, 0
        from sandbox.monitor.cost import ThreadMeter
        self.meter = meter if meter is not None else ThreadMeter()   # the run's CPU here
        self.thread = threading.Thread(target=self.meter.run, args=(self._loop,),
                                       name="netproxy-dns", daemon=True)

    def start(self) -> "DnsStub":
        self.sock.setblocking(False)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self.thread.join(2.0)
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()

    def _loop(self) -> None:
        while not self.stopping:
            try:
                r, _ = fdwait.ready([self.sock, self._wake_r])
            except (OSError, ValueError):
                return
            if self._wake_r in r:
                return
            try:
                data, peer = self.sock.recvfrom(MAX_QUERY + 1)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            now = time.monotonic()
            if now - self.window >= 1.0:
                self.window, self.count = now, 0
            self.count += 1
            if self.count > RATE:
                continue        # dropped; the client's resolver retries
            reply = self._handle(data)
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def _handle(self, data: bytes) -> bytes | None:
        try:
            qid, flags, name, qtype, question = parse_query(data)
        except DnsError:
            return None
        canon = normalize_name(name)
        rule = None
        if canon is not None and parse_addr(name) is None:
            rule = next((r for r in self.allowlist.rules if r.matches_name(canon)), None)
        if rule is None or canon is None:    # a rule is only ever found for a name
            self.record(name[:253] or ".", f"qtype={qtype}", False,
                        f"no allow entry for the name {name[:100]!r} (not looked up)", "REFUSED")
            return answer(qid, flags, question, RCODE_REFUSED)
        found = self.resolve(canon, rule.lo)
        addrs = [a for a in (parse_addr(x) for x in found) if a is not None]
        ok = [str(a) for a in self.allowlist.decide_resolved(rule, rule.lo, addrs).addresses]
        want = 4 if qtype == QTYPE_A else 6 if qtype == QTYPE_AAAA else 0
        picked = [a for a in ok if ipaddress.ip_address(a).version == want]
        self.record(canon, f"qtype={qtype} resolved={','.join(found)} answered="
                    f"{','.join(picked)}", True, rule.text, "NOERROR")
        return answer(qid, flags, question, RCODE_OK, qtype, picked)
