"""Allowlists compared and met: a nested request or a ceiling never widens one.

`covers(b, a)`: every connection entry `a` admits, entry `b` admits too
(used by `policy.compare`, conservative: a union of several entries covering
one is not recognised, so the answer errs towards "wider"). `meet(a, b)`: the
entries admitting exactly what both admit (used by `policy.confine` to derive
a child's allowlist under its parent's). Both are judged on what `rules.Allowlist`
decides, and a property test checks that against `decide` itself.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from sandbox.netproxy.rules import Rule, parse_rule


def _host_covers(b: Rule, a: Rule) -> bool:
    if a.net is not None:
        if b.net is None or a.net.version != b.net.version:
            return False
        return a.net.subnet_of(b.net)  # type: ignore[arg-type]  # same version, checked
    if b.net is not None:
        return False
    if b.name is not None:
        return a.name == b.name
    assert b.suffix is not None
    inner = a.name if a.name is not None else a.suffix
    assert inner is not None
    return inner.endswith("." + b.suffix) or (a.suffix is not None and a.suffix == b.suffix)


def covers(b: Rule, a: Rule) -> bool:
    """Does entry `b` admit every connection entry `a` admits?

    A single address entry admits a private address where a network entry does
    not (deny_private), so only a single address covers a single address."""
    if not (b.lo <= a.lo and a.hi <= b.hi):
        return False
    if a.single and not b.single and a.net is not None and b.net is not None \
            and _is_private(a.net.network_address):
        return False
    return _host_covers(b, a)


def _host_text(r: Rule) -> str:
    if r.net is not None:
        text = str(r.net.network_address) if r.single else str(r.net)
        return f"[{text}]" if r.net.version == 6 else text
    return r.name if r.name is not None else f"*.{r.suffix}"


def _ports_text(lo: int, hi: int) -> str:
    if (lo, hi) == (1, 65535):
        return "*"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def meet_rule(a: Rule, b: Rule) -> Rule | None:
    """The entry admitting what both admit, or None when nothing is common."""
    lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
    if lo > hi:
        return None
    if a.net is not None or b.net is not None:
        if a.net is None or b.net is None or a.net.version != b.net.version:
            return None
        if a.net.subnet_of(b.net):       # type: ignore[arg-type]
            narrow, other = a, b
        elif b.net.subnet_of(a.net):     # type: ignore[arg-type]
            narrow, other = b, a
        else:
            return None
        if narrow.single and not other.single:
            # a single address of a network entry: public addresses only, as the
            # network entry would (no single entry may widen it to a private one)
            if narrow.net is not None and _is_private(narrow.net.network_address):
                return None
        host = _host_text(narrow)
    else:
        if _host_covers(a, b):
            host = _host_text(b)
        elif _host_covers(b, a):
            host = _host_text(a)
        else:
            return None
    return parse_rule(f"{host}:{_ports_text(lo, hi)}")


def _is_private(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    from sandbox.netproxy.rules import private_reason
    return private_reason(addr) is not None


def meet(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    """Allow entries admitting exactly the connections both lists admit (pairwise meets)."""
    ra = [parse_rule(x) for x in a]
    rb = [parse_rule(x) for x in b]
    out: list[str] = []
    for x in ra:
        for y in rb:
            m = meet_rule(x, y)
            if m is not None and m.text not in out:
                out.append(m.text)
    return tuple(out)


def uncovered(a: Iterable[str], b: Iterable[str]) -> list[str]:
    """Entries of `a` that no entry of `b` covers."""
    rb = [parse_rule(y) for y in b]
    return [x for x in a if not any(covers(y, parse_rule(x)) for y in rb)]
