"""Path globs of policy rules, compiled once to matchers.

Syntax (fnmatch-like, but path aware):
  `*`   any run of characters except `/` (dot files included)
  `?`   one character except `/`
  `[..]` one character of a class (`[!..]` negates); never matches `/`
  `**`  as a whole segment (`/a/**/b`, `/a/**`): zero or more whole segments
        (`/a/**` matches what is *inside* /a, not /a itself);
        anywhere else it behaves like `*` but also crosses `/`.
A rule that matches a directory covers its whole subtree, so the compiled
matcher accepts the match followed by `/anything`; the match's `root` is the
part the glob itself matched (the concrete rule path).

Matching never backtracks over choices (sandbox/policy/glob_nfa.py says why):
a glob with one variable-length wildcard is a regular expression, any other an
automaton whose time is linear in the path.
"""
from __future__ import annotations

import functools
import re
from typing import Union

from sandbox.policy.glob_nfa import BitGlob, GlobMatch, Item

GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    # In C: the planner asks this thousands of times per run (a generator was ~1 ms).
    return not GLOB_CHARS.isdisjoint(pattern)


def _class(pattern: str, i: int) -> tuple[str, int] | None:
    """Translate a `[...]` class starting at pattern[i]; None when unterminated."""
    j = i + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 1
    if j >= len(pattern):
        return None
    body = pattern[i + 1:j]
    neg = body[:1] in ("!", "^")
    if neg:
        body = body[1:]
    # "[" inside a class is literal ("[[]" names a "["): escaped for `re`, which
    # would otherwise read "[[" as the start of a nested set.
    body = body.replace("\\", "\\\\").replace("[", "\\[").replace("/", "")
    if not body:
        return ("(?!)" if not neg else "[^/]"), j + 1
    return ("[^/" + body + "]" if neg else "(?:(?!/)[" + body + "])"), j + 1


MAX_WILDCARDS = 64
"""Wildcards (`*`, `**`, `?`, `[..]`) one rule may hold: each class costs a test per new
character a path brings, and a person writing a policy needs a handful."""


def items(pattern: str) -> list[Item]:
    """The glob as a list of items (sandbox/policy/glob_nfa.py lists their kinds)."""
    out: list[Item] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                seg_start = i == 0 or pattern[i - 1] == "/"
                after = i + 2
                if seg_start and after < n and pattern[after] == "/":
                    if not (out and out[-1][0] == "segs"):   # "/**/**/" is "/**/"
                        out.append(("segs", ""))
                    i = after + 1
                    continue
                if seg_start and after == n:
                    out.append(("tail", ""))   # "/**" at the end: anything inside
                    i = after
                    continue
                out.append(("any", ""))
                i = after
                while i < n and pattern[i] == "*":
                    i += 1
                continue
            out.append(("star", ""))
            i += 1
        elif c == "?":
            out.append(("one", ""))
            i += 1
        elif c == "[":
            cls = _class(pattern, i)
            if cls is None:
                out.append(("lit", c))
                i += 1
            else:
                out.append(("set", cls[0]))
                i = cls[1]
        else:
            out.append(("lit", c))
            i += 1
    return out


_REGEX = {"one": "[^/]", "star": "[^/]*", "any": ".*", "segs": "(?:[^/]+/)*",
          "tail": "(?:[^/]+(?:/[^/]+)*)"}
_VARIABLE = frozenset(("star", "any", "segs", "tail"))


def translate(pattern: str) -> str:
    """Regex source (no anchors) matching exactly the paths `pattern` names. Only safe
    to run for a glob with at most one variable-length wildcard (`_compile`)."""
    return "".join(re.escape(a) if k == "lit" else a if k == "set" else _REGEX[k]
                   for k, a in items(pattern))


def problem(pattern: str) -> str | None:
    """Why `pattern` cannot be a rule's glob, or None."""
    count = sum(k != "lit" for k, _ in items(pattern))
    if count > MAX_WILDCARDS:
        return (f"{count} wildcards in one glob; at most {MAX_WILDCARDS} (every path the "
                "sandbox touches is matched against it): split the rule")
    return None


class _RegexGlob:
    """A glob with at most one variable-length wildcard, matched by `re`: its one loop
    is the only choice to backtrack over, so a match costs at most path x glob steps in
    C, and the greedy loop gives the longest root, as BitGlob does."""

    __slots__ = ("_match",)

    def __init__(self, source: str, subtree: bool) -> None:
        rx = f"(?P<root>{source})(?:/.*)?" if subtree else f"(?P<root>{source})"
        self._match = re.compile(rx, re.DOTALL).fullmatch

    def fullmatch(self, path: str) -> GlobMatch | None:
        m = self._match(path)
        return None if m is None else GlobMatch(m.group("root"))


Glob = Union[_RegexGlob, BitGlob]


def _compile(pattern: str, subtree: bool) -> Glob:
    parsed = items(pattern)
    if sum(k in _VARIABLE for k, _ in parsed) <= 1:
        return _RegexGlob(translate(pattern), subtree)
    return BitGlob(parsed, subtree=subtree)


# Compiled once per pattern: comparing a nested request's policy with its parent's
# compiled each child glob once per parent deny rule (~70 times); 8.6 s of the
# launcher's CPU for one 200,000-character glob (found by an attack probe). A policy
# path is at most PATH_MAX characters (variables.check_path_syntax), so the cache
# holds at most 512 compiled globs of bounded size. Globs are immutable and shared.
@functools.lru_cache(maxsize=512)
def compile_rule(pattern: str) -> Glob:
    """Matches every path the rule covers: the glob's matches and their subtrees; the
    match's `root` is the part the glob itself matched (the concrete rule path)."""
    return _compile(pattern, True)


@functools.lru_cache(maxsize=512)
def compile_exact(pattern: str) -> Glob:
    """Matches only the paths the glob itself names (no subtree)."""
    return _compile(pattern, False)


def static_prefix(pattern: str) -> str:
    """The longest leading run of whole literal segments: "/etc/ssh/*key*" -> "/etc/ssh"."""
    parts = pattern.split("/")
    keep: list[str] = []
    for p in parts:
        if is_glob(p):
            break
        keep.append(p)
    prefix = "/".join(keep)
    return prefix or "/"
