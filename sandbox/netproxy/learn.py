"""`sandbox policy suggest` for mode = "allowlist": the allow entries a run used.

From the run's proxy records (syscall "proxy"), allowed ones only, as files
are learned from allowed accesses: one exact ``HOST:PORT`` entry per target
used (a suffix entry of the learning policy narrows to the names used), plus
an entry naming the address itself when the name reached a private address
(the learning policy admitted it by such an entry; without it the learned
policy would refuse the same connection under `deny_private`).
"""
from __future__ import annotations

from typing import Any, Iterable

from sandbox.netproxy.rules import RuleError, parse_addr, parse_rule, private_reason


def _address(flags: str) -> str | None:
    for part in flags.split():
        if part.startswith("address="):
            return part[len("address="):]
    return None


def allow_entries(records: Iterable[dict[str, Any]]) -> list[str]:
    out: list[str] = []

    def add(entry: str) -> None:
        try:
            parse_rule(entry)          # only what the loader accepts back
        except RuleError:
            return
        if entry not in out:
            out.append(entry)

    for r in records:
        if r.get("syscall") != "proxy" or r.get("verdict") != "allowed":
            continue
        target = str(r.get("path", ""))
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            continue
        add(target)
        addr = parse_addr(_address(str(r.get("flags") or "")) or "")
        if addr is not None and parse_addr(host) is None and private_reason(addr):
            add(f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}")
    return sorted(out)
