"""Path globs of policy rules, compiled once to regular expressions.

Syntax (fnmatch-like, but path aware):
  `*`   any run of characters except `/` (dot files included)
  `?`   one character except `/`
  `[..]` one character of a class (`[!..]` negates); never matches `/`
  `**`  as a whole segment (`/a/**/b`, `/a/**`): zero or more whole segments
        (`/a/**` matches what is *inside* /a, not /a itself);
        anywhere else it behaves like `*` but also crosses `/`.
A rule that matches a directory covers its whole subtree, so the compiled
expression accepts the match followed by `/anything`; the group `root` is the
part the glob itself matched (the concrete rule path).
"""
from __future__ import annotations

import re

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


def translate(pattern: str) -> str:
    """Regex source (no anchors) matching exactly the paths `pattern` names."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                seg_start = i == 0 or pattern[i - 1] == "/"
                after = i + 2
                if seg_start and after < n and pattern[after] == "/":
                    # "/**/" : zero or more whole segments
                    out.append("(?:[^/]+/)*")
                    i = after + 1
                    continue
                if seg_start and after == n:
                    out.append("(?:[^/]+(?:/[^/]+)*)")   # "/**" at the end: anything inside
                    i = after
                    continue
                out.append(".*")
                i = after
                while i < n and pattern[i] == "*":
                    i += 1
                continue
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls = _class(pattern, i)
            if cls is None:
                out.append(re.escape(c))
                i += 1
            else:
                out.append(cls[0])
                i = cls[1]
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_rule(pattern: str) -> re.Pattern[str]:
    """Matches every path the rule covers: the glob's matches and their subtrees."""
    return re.compile("(?P<root>" + translate(pattern) + ")(?:/.*)?", re.DOTALL)


def compile_exact(pattern: str) -> re.Pattern[str]:
    """Matches only the paths the glob itself names (no subtree)."""
    return re.compile(translate(pattern), re.DOTALL)


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
