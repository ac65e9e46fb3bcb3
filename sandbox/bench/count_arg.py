"""The one optional count the bench's developer entry points take
(`python -m sandbox.bench.memory 50`, `... audit 20000`): bad input gets one line and
exit 2, `--help` the usage, never a traceback (the rule for every command here)."""
from __future__ import annotations

import sys


def count_arg(argv: list[str], default: int, usage: str, *, flags: tuple[str, ...] = ()) -> int:
    """The count in `argv` (`default` without one), ignoring the accepted `flags`."""
    rest = [a for a in argv if a not in flags]
    if any(a in ("-h", "--help") for a in rest):
        print(f"usage: {usage}")
        raise SystemExit(0)
    if not rest:
        return default
    if len(rest) == 1 and rest[0].isdigit() and int(rest[0]) > 0:
        return int(rest[0])
    print(f"{usage.split()[2] if len(usage.split()) > 2 else 'bench'}: expected one positive "
          f"count, got {' '.join(rest)!r} (usage: {usage})", file=sys.stderr)
    raise SystemExit(2)
