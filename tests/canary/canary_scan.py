"""Search this process's environment block and readable memory for canaries.

Used from inside a sandbox, as a program (`python canary_scan.py PREFIX SPEC`)
or as an action (canary_actions). A canary is PREFIX + a secret tail; the
scanner is given only PREFIX and the SHA-256 of each whole canary, so it never
holds one itself: every match is a copy that reached this process from outside.
SPEC is JSON {name: [length, sha256 hex]}.
"""
from __future__ import annotations

import hashlib
import json
import sys

CHUNK = 16 << 20


def scan(prefix: str, spec: dict[str, list]) -> dict:
    pre = prefix.encode()
    want = {h: (name, n) for name, (n, h) in spec.items()}
    longest = max(n for n, _ in spec.values())
    found: dict[str, list[str]] = {}

    def check(buf: bytes, where: str) -> None:
        i = buf.find(pre)
        while i >= 0:
            for h, (name, n) in want.items():
                if hashlib.sha256(buf[i:i + n]).hexdigest() == h:
                    places = found.setdefault(name, [])
                    if where not in places:
                        places.append(where)
            i = buf.find(pre, i + 1)

    with open("/proc/self/environ", "rb") as f:
        check(f.read(), "environ")
    scanned = regions = 0
    with open("/proc/self/maps") as maps:
        lines = maps.read().splitlines()
    with open("/proc/self/mem", "rb", buffering=0) as mem:
        for line in lines:
            parts = line.split()
            if "r" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            pos, ok = lo, False
            while pos < hi:
                n = min(CHUNK + longest, hi - pos)
                try:
                    mem.seek(pos)
                    data = mem.read(n)
                except (OSError, ValueError, OverflowError):
                    break
                ok = True
                scanned += len(data)
                check(data, "memory")
                pos += CHUNK
            regions += ok
    return {"found": found, "scanned": scanned, "regions": regions}


if __name__ == "__main__":
    print(json.dumps(scan(sys.argv[1], json.loads(sys.argv[2]))))
