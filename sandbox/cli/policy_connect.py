"""`sandbox policy explain POLICY connect HOST:PORT`: the allowlist's verdict on one connection.

The same decision the monitor's proxy makes (`sandbox.netproxy.rules`): an IP
literal is decided at once; a name is checked against the entries, resolved on
this host (or taken from --address) and every address is checked.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from sandbox.errors import InputError


def split_target(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT; InputError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"connect: {text!r} is not HOST:PORT (IPv6: [ADDRESS]:PORT)")
    if host.startswith("[") != host.endswith("]"):
        raise InputError(f"connect: {text!r}: unbalanced brackets")
    if not 1 <= int(port) <= 65535:
        raise InputError(f"connect: {text!r}: port {int(port)} is not 1-65535")
    return host, int(port)


def explain_connect(args: argparse.Namespace, policy: Any) -> int:
    from sandbox.netproxy.rules import Allowlist
    from sandbox.netproxy.server import lookup   # the proxy's own answer, not a copy
    host, port = split_target(args.path)
    net = policy.network
    answers: list[str] = []
    if net.mode == "host":
        allowed, rule = True, 'network.mode = "host": every connection'
        addresses: list[str] = []
    elif net.mode != "allowlist":
        allowed, rule = False, f'network.mode = "{net.mode}": no connection leaves the sandbox'
        addresses = []
    else:
        def resolve(name: str) -> list[str]:
            answers.extend(args.address or lookup(name, port))
            return answers
        v = Allowlist.from_policy(net).decide(host, port, resolve)
        allowed, rule, addresses = v.allowed, v.rule, [str(a) for a in v.addresses]
    if args.json:
        print(json.dumps({"policy": policy.name, "operation": "connect", "host": host,
                          "port": port, "resolved": answers, "addresses": addresses,
                          "allowed": allowed, "rule": rule}, indent=2))
    else:
        print(f"{'allowed' if allowed else 'denied'}: connect {host}:{port}")
        print(f"  rule:      {rule}")
        if answers:
            print(f"  resolved:  {', '.join(answers)}")
        if allowed and addresses:
            print(f"  connects:  {addresses[0]} (pinned; no second lookup)")
    return 0 if allowed else 1
