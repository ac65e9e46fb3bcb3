"""The `[network] allow` entries of mode = "allowlist", and the decision on one connection.

An entry is ``HOST:PORTS``:

- HOST: a DNS name (``pypi.org``), a suffix pattern (``*.pythonhosted.org``:
  any name *below* it, never the apex), an IPv4 address or network
  (``10.0.0.5``, ``10.0.0.0/8``), or an IPv6 one in brackets (``[::1]``,
  ``[fd00::/8]``);
- PORTS: one port, a range ``80-8080``, or ``*`` (1-65535).

WHY addresses are checked even for allowed names: a name is only as good as
its DNS answer. sandbox-runtime matches names only, so an allowed name that
resolves to 127.0.0.1 reached every port of the host (srt #65). Here a name
entry admits only *global* addresses; a private one (loopback, RFC 1918,
link-local with 169.254.169.254, CGNAT, ULA, multicast, and the IPv4 inside a
mapped, 6to4 or Teredo IPv6 address) needs an explicit single-address entry
(``127.0.0.1:8080``) while ``deny_private`` is true (the default). A network
entry (``10.0.0.0/8``) admits private addresses only with ``deny_private =
false``. An IP literal as the target is admitted only by an IP entry, never by
a name entry.

The decision is pure (addresses in, verdict out): the proxy resolves, then
asks, then connects to an address it was told is allowed (pinned).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_NAME = 253

# Named private ranges, for the reason in a refusal (ipaddress.is_global decides).
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = ipaddress.ip_address("169.254.169.254")


class RuleError(ValueError):
    """An allow entry that cannot be parsed; the message says what to write instead."""


@dataclass(frozen=True)
class Rule:
    """One parsed allow entry. Exactly one of `name`, `suffix`, `net` is set."""
    text: str
    lo: int
    hi: int
    name: str | None = None       # exact DNS name, lower case, no trailing dot
    suffix: str | None = None     # "*.x.org" -> "x.org": names strictly below it
    net: IPNetwork | None = None

    @property
    def single(self) -> bool:
        """An explicit address (/32 or /128): the only kind that admits a private one."""
        return self.net is not None and self.net.num_addresses == 1

    def ports(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def matches_name(self, host: str) -> bool:
        if self.name is not None:
            return host == self.name
        if self.suffix is not None:
            return host.endswith("." + self.suffix)
        return False

    def matches_addr(self, addr: IPAddress) -> bool:
        return self.net is not None and addr.version == self.net.version and addr in self.net


def normalize_name(host: str) -> str | None:
    """A DNS name in canonical form (lower case, no trailing dot), or None if not one."""
    h = host.lower()
    if h.endswith("."):
        h = h[:-1]
    if not h or len(h) > MAX_NAME:
        return None
    labels = h.split(".")
    if not all(_LABEL.match(x) for x in labels) or labels[-1].isdigit():
        return None
    return h


def parse_addr(host: str) -> IPAddress | None:
    """An IP literal as a client may send it (brackets optional for IPv6), canonical:
    an IPv4-mapped IPv6 address becomes its IPv4 address. None when not a literal."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in h:                        # a zone index: no such thing outside the sandbox
        return None
    try:
        a = ipaddress.ip_address(h)
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def _ports(text: str, entry: str) -> tuple[int, int]:
    if text == "*":
        return 1, 65535
    m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", text)
    if not m:
        raise RuleError(f"{entry!r}: the port must be a number, a range LO-HI or *")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if not 1 <= lo <= hi <= 65535:
        raise RuleError(f"{entry!r}: ports are 1-65535, a range low-high")
    return lo, hi


def parse_rule(entry: str) -> Rule:
    """One allow entry; RuleError with an actionable message."""
    if not isinstance(entry, str) or not entry.strip():
        raise RuleError("an allow entry is HOST:PORT, e.g. \"pypi.org:443\"")
    e = entry.strip()
    if e.startswith("["):
        end = e.find("]")
        if end < 0 or e[end + 1:end + 2] != ":":
            raise RuleError(f"{entry!r}: an IPv6 entry is [ADDRESS]:PORT, e.g. \"[::1]:8080\"")
        host, port = e[1:end], e[end + 2:]
        try:
            net = ipaddress.ip_network(host, strict=True)
        except ValueError:
            raise RuleError(f"{entry!r}: {host!r} is not an IPv6 address or network") from None
        if net.version != 6:
            raise RuleError(f"{entry!r}: brackets are for IPv6; write IPv4 without them")
        lo, hi = _ports(port, entry)
        return Rule(entry, lo, hi, net=net)
    host, sep, port = e.rpartition(":")
    if not sep or not host:
        raise RuleError(f"{entry!r}: a port is required (HOST:PORT, HOST:LO-HI or HOST:*)")
    lo, hi = _ports(port, entry)
    if ":" in host:
        raise RuleError(f"{entry!r}: write an IPv6 address in brackets, e.g. \"[::1]:8080\"")
    if re.fullmatch(r"[0-9./]+", host):
        try:
            net4 = ipaddress.ip_network(host, strict=True)
        except ValueError as exc:
            raise RuleError(f"{entry!r}: {exc}") from None
        return Rule(entry, lo, hi, net=net4)
    if host.startswith("*."):
        suffix = normalize_name(host[2:])
        if suffix is None or "." not in suffix:
            raise RuleError(f"{entry!r}: *.SUFFIX needs a domain with at least two labels "
                            "(\"*.example.org\"); a top-level wildcard would allow everything")
        return Rule(entry, lo, hi, suffix=suffix)
    if "*" in host:
        raise RuleError(f"{entry!r}: a wildcard is allowed only as a leading \"*.\"")
    name = normalize_name(host)
    if name is None:
        raise RuleError(f"{entry!r}: {host!r} is not a DNS name or an IP address")
    return Rule(entry, lo, hi, name=name)


def parse_rules(entries: Iterable[str]) -> tuple[Rule, ...]:
    return tuple(parse_rule(e) for e in entries)


def private_reason(addr: IPAddress) -> str | None:
    """Why `addr` is not a public internet address, or None when it is."""
    if isinstance(addr, ipaddress.IPv6Address):
        for inner in (addr.ipv4_mapped, addr.sixtofour, (addr.teredo or (None, None))[1]):
            if inner is not None:
                why = private_reason(inner)
                if why:
                    return f"embeds {inner}, {why}"
    if addr.is_loopback:
        return "loopback"
    if addr == _METADATA:
        return "link-local (cloud metadata)"
    if addr.is_link_local:
        return "link-local"
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local:
        return "site-local (fec0::/10, deprecated but routed inside some sites)"
    if addr.is_multicast:
        return "multicast"
    if addr.is_unspecified:
        return "unspecified"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "CGNAT (100.64.0.0/10)"
    if addr.is_private:
        return "private or reserved (RFC 1918, ULA, documentation, ...)"
    if not addr.is_global or addr.is_reserved:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class Verdict:
    """`addresses`: the ones a connection may use, in order (empty when refused)."""
    allowed: bool
    rule: str
    addresses: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class Allowlist:
    rules: tuple[Rule, ...]
    deny_private: bool = True

    @classmethod
    def from_policy(cls, network: object) -> "Allowlist":
        return cls(parse_rules(getattr(network, "allow", ())),
                   bool(getattr(network, "deny_private", True)))

    def check_addr(self, addr: IPAddress, port: int, *, via: Rule | None = None) -> Verdict:
        """One address: allowed by an IP entry, or (via a name entry) when public."""
        why = private_reason(addr)
        network_match = False
        for r in self.rules:
            if r.matches_addr(addr) and r.ports(port):
                if why and self.deny_private and not r.single:
                    network_match = True
                    continue
                return Verdict(True, r.text, (addr,))
        if via is not None:
            if why is None or not self.deny_private:
                return Verdict(True, via.text, (addr,))
            return Verdict(False, f"deny_private: {addr} is {why} (allow it as an explicit "
                                  f"address entry, e.g. \"{_literal(addr)}:{port}\")")
        if network_match:
            return Verdict(False, f"deny_private: {addr} is {why} (a network entry admits "
                                  f"public addresses only; name it: \"{_literal(addr)}:{port}\")")
        return Verdict(False, f"no allow entry for {_literal(addr)}:{port}")

    def name_rule(self, host: str, port: int) -> Rule | None:
        for r in self.rules:
            if r.matches_name(host) and r.ports(port):
                return r
        return None

    def needs_lookup(self, host: str, port: int) -> tuple[Verdict | None, Rule | None]:
        """Before resolving: a final verdict (an IP literal, a refused name), or the name
        entry that admits the name (then `decide_resolved` on its addresses)."""
        if not 1 <= port <= 65535:
            return Verdict(False, f"invalid port {port}"), None
        addr = parse_addr(host)
        if addr is not None:
            return self.check_addr(addr, port), None
        name = normalize_name(host)
        if name is None:
            return Verdict(False, f"not a DNS name or an IP address: {host[:80]!r}"), None
        rule = self.name_rule(name, port)
        if rule is None:
            return Verdict(False, f"no allow entry for {name}:{port}"), None
        return None, rule

    def decide_resolved(self, rule: Rule, port: int,
                        addresses: Sequence[IPAddress]) -> Verdict:
        """Every address the name resolved to is checked; the allowed ones are kept
        (in order) for the connection, which uses one of them and never looks again."""
        if not addresses:
            return Verdict(False, f"{rule.text}: the name does not resolve")
        ok: list[IPAddress] = []
        refusals: list[str] = []
        for a in addresses:
            v = self.check_addr(a, port, via=rule)
            if v.allowed:
                ok.append(a)
            else:
                refusals.append(v.rule)
        if not ok:
            return Verdict(False, refusals[0])
        return Verdict(True, rule.text, tuple(ok))

    def decide(self, host: str, port: int, resolve=None) -> Verdict:
        """The whole decision, `resolve(name) -> [addresses]` for names (explain, tests)."""
        early, rule = self.needs_lookup(host, port)
        if early is not None:
            return early
        assert rule is not None
        addrs = list(resolve(normalize_name(host))) if resolve is not None else []
        return self.decide_resolved(rule, port, [a for a in (parse_addr(str(x)) for x in addrs)
                                                 if a is not None])


def _literal(addr: IPAddress) -> str:
    return f"[{addr}]" if addr.version == 6 else str(addr)
