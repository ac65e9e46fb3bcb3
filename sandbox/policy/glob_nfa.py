"""A glob matcher whose time is linear in the path, whatever the glob.

Why not the regular expression the glob translates to: Python's `re` backtracks,
and a glob with several unbounded wildcards (`/usr/**/**/**/**/zz`, `*a*a*a*b`)
makes it try every way of splitting the path among them. One deny rule of a
nested spawn or of a tenant's inline policy then held the shared monitor (every
run it serves) or the HTTP server for seconds per path; `monitor_cpu` cannot
interrupt a match already in C.

Here the glob is a position automaton (Thompson's construction, simulated by
bit sets, the shift-and of Baeza-Yates and Gonnet extended with loops): bit `i`
of the state says "the glob's first `i` positions have matched the path so far".
Each character of the path costs a fixed handful of integer operations on a
number of `positions + 1` bits, so a path of n characters costs O(n) steps
however the wildcards nest, and no input can make it try alternatives.

The glob's items (sandbox/policy/globs.py parses them):
  lit c     one character c            one   `?`: one character but `/`
  set rx    one character of a class   star  `*`: a run of characters but `/`
  any       in-segment `**`: any run   segs  `/**/`: zero or more whole segments
  tail      a final `/**`: one or more whole segments (what is inside)
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Item = tuple[str, str]          # (kind, argument): see the module's docstring

_MASK_CACHE = 512               # distinct characters whose position masks are kept


@dataclass(frozen=True, slots=True)
class GlobMatch:
    """A path the glob matched. `root`: the longest leading part the glob itself named,
    the rest (if any) being a subtree below it (`/`-separated); the whole path for an
    exact match."""
    root: str


class BitGlob:
    """The automaton of one glob. `subtree`: a match may be followed by `/anything`
    (a rule covers what is below the paths it names)."""

    __slots__ = ("_lit", "_nonslash", "_any", "_sets", "_rep", "_back", "_skip1",
                 "_skip2", "_skips", "_start", "_acc", "_masks", "_subtree")

    def __init__(self, items: Sequence[Item], *, subtree: bool) -> None:
        lit: dict[str, int] = {}
        nonslash = anyc = rep = back = skip1 = skip2 = 0
        sets: list[tuple[int, Callable[[str], object]]] = []
        n = 0           # positions so far; position i is bit i, bit 0 the start
        acc = 0

        def new() -> int:
            nonlocal n
            n += 1
            return 1 << n

        for kind, arg in items:
            if kind == "lit":
                b = new()
                lit[arg] = lit.get(arg, 0) | b
            elif kind == "one":
                nonslash |= new()
            elif kind == "set":
                sets.append((new(), re.compile(arg, re.DOTALL).fullmatch))
            elif kind in ("star", "any"):
                b = new()                           # loops on itself, may be skipped
                if kind == "star":
                    nonslash |= b
                else:
                    anyc |= b
                rep |= b
                skip1 |= b >> 1
            elif kind in ("segs", "tail"):
                # [^/]+ then "/", the "/" leading back into another segment: segs may
                # be skipped whole and ends after its "/"; tail ends inside a segment.
                first, slash = new(), new()
                nonslash |= first
                rep |= first
                lit["/"] = lit.get("/", 0) | slash
                back |= slash
                if kind == "segs":
                    skip2 |= first >> 1
                else:
                    acc = first
            else:
                raise ValueError(f"unknown glob item {kind!r}")
        self._lit, self._nonslash, self._any, self._sets = lit, nonslash, anyc, tuple(sets)
        self._rep, self._back, self._skip1, self._skip2 = rep, back, skip1, skip2
        self._skips = skip1 | skip2
        if not (items and items[-1][0] == "tail"):
            acc = 1 << n
        self._acc = acc
        self._start = self._close(1)
        self._masks: dict[str, int] = {}
        self._subtree = subtree

    def _close(self, d: int) -> int:
        """`d` with every state reachable by skipping wildcards that match nothing.
        Runs of skippable items are short (globs.py merges `/**/**/` and `***`), so
        this loops a few times at most."""
        s1, s2 = self._skip1, self._skip2
        while True:
            nd = d | ((d & s1) << 1) | ((d & s2) << 2)
            if nd == d:
                return d
            d = nd

    def _mask(self, c: str) -> int:
        """The positions that accept character `c`."""
        m = self._lit.get(c, 0) | self._any
        if c != "/":
            m |= self._nonslash
            for bit, match in self._sets:
                if match(c):
                    m |= bit
        if len(self._masks) < _MASK_CACHE:
            self._masks[c] = m
        return m

    def fullmatch(self, path: str) -> GlobMatch | None:
        d, acc, rep, back, skips = self._start, self._acc, self._rep, self._back, self._skips
        masks, subtree = self._masks, self._subtree
        end = -1
        for i, c in enumerate(path):
            if subtree and c == "/" and d & acc:
                end = i                 # the glob named path[:i]; the rest is below it
            m = masks.get(c)
            if m is None:
                m = self._mask(c)
            d = ((d << 1) | (d & rep) | ((d & back) >> 1)) & m
            if d & skips:
                d = self._close(d)
            if not d:
                break
        else:
            if d & acc:
                end = len(path)
        return None if end < 0 else GlobMatch(path[:end])
