"""Sizes and durations as written in policies, and back.

Policies are written by people, so `memory = "512MiB"` and `wall = "2m"` read
better than byte and second counts; both spellings are accepted. Parsing is
strict: anything that is not clearly one size or one duration is an error
(never a silent zero, never a silent "unlimited"). Parsers raise ValueError
with a human message; the loader turns it into a located PolicyError.
"""
from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4,
    "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")

SIZE_HELP = 'a size: bytes as an integer, or a string like "4096", "512KiB", "256MiB", "1G" (K = KiB = 1024, M = MiB, G = GiB, T = TiB)'
DURATION_HELP = 'a duration: seconds as a number, or a string like "500ms", "10s", "2m", "1h"'

# Upper bounds: beyond them a value is a typo, and the kernel interfaces it feeds
# (setrlimit's rlim_t, cgroup files, timer arithmetic) would overflow or refuse it
# mid-run. "unlimited" is the spelling for no limit.
MAX_SIZE = 1 << 50                 # 1 PiB
MAX_DURATION = 365 * 86400.0       # one year, in seconds
MAX_COUNT = 1 << 22                # PID_MAX_LIMIT, the most processes a kernel allows


def parse_size(value: object) -> int:
    """Bytes from an int or a size string. Must be > 0.

    K/M/G/T are binary, as in systemd's MemoryMax= and Docker's --memory:
    "1G" == "1GiB" == 2^30 bytes. Decimal units (kB, MB) are refused rather
    than guessed.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}, got a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m.group(2).lower() if m else None
        if not m or unit not in _SIZE_UNITS:
            raise ValueError(f"bad size {value!r}: expected {SIZE_HELP}")
        f = float(m.group(1)) * _SIZE_UNITS[unit]
        if f != int(f):
            raise ValueError(f"bad size {value!r}: not a whole number of bytes")
        n = int(f)
    else:
        raise ValueError(f"expected {SIZE_HELP}, got {type(value).__name__}")
    if n <= 0:
        raise ValueError(f"size must be greater than zero, got {value!r}")
    if n > MAX_SIZE:
        raise ValueError(f"size {value!r} is out of range: at most 1PiB "
                         '(use "unlimited" for no limit)')
    return n


def parse_duration(value: object) -> float:
    """Seconds (float) from a number or a duration string. Must be > 0 and finite."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}, got a boolean")
    if isinstance(value, (int, float)):
        s = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        unit = (m.group(2) or "s") if m else None
        if not m or unit not in _DURATION_UNITS:
            raise ValueError(f"bad duration {value!r}: expected {DURATION_HELP}")
        s = float(m.group(1)) * _DURATION_UNITS[unit]
    else:
        raise ValueError(f"expected {DURATION_HELP}, got {type(value).__name__}")
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"duration must be greater than zero, got {value!r}")
    if s > MAX_DURATION:
        raise ValueError(f"duration {value!r} is out of range: at most 365 days "
                         '(use "unlimited" for no limit)')
    return s


def parse_count(value: object) -> int:
    """A positive integer no larger than MAX_COUNT."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a positive integer, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value}")
    if value > MAX_COUNT:
        raise ValueError(f"{value} is out of range: at most {MAX_COUNT} "
                         '(use "unlimited" for no limit)')
    return value


def format_size(n: int) -> str:
    """The shortest exact binary spelling: 536870912 -> "512MiB", 1000 -> "1000"."""
    for unit, factor in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def format_duration(s: float) -> str:
    """An exact short spelling: 60 -> "1m", 0.5 -> "500ms", 90 -> "90s"."""
    for unit, factor in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if s >= factor and (s / factor).is_integer():
            return f"{int(s / factor)}{unit}"
    ms = s * 1000
    if ms.is_integer():
        return f"{int(ms)}ms"
    return f"{s}s"
