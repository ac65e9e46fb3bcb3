"""Find the source line of a key in a TOML text.

tomllib returns plain dicts without positions, so an error about
`limits.memory` is located by scanning the text: table headers (`[limits]`),
keys (`memory = ...`, also dotted `limits.memory = ...` and quoted keys) and,
for an element of an array, the first line after the key that holds that
value. It is a best effort: when the exact key cannot be found the line of the
nearest enclosing key or table is returned, and None when nothing matches.
"""
from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


def _parts(dotted: str) -> list[str]:
    return [p[1:-1] if p[:1] in "\"'" else p for p in _PART.findall(dotted)]


class Locator:
    """Index of one TOML text: dotted key path -> first line (1-based)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.index: dict[str, int] = {}
        self.spans: dict[str, tuple[int, int]] = {}   # key -> (line, last line of its value)
        table: list[str] = []
        last_key: str | None = None
        for no, line in enumerate(self.lines, 1):
            h = _HEADER.match(line)
            if h and not _KEY.match(line):
                table = _parts(h.group(1))
                self.index.setdefault(".".join(table), no)
                last_key = None
                continue
            k = _KEY.match(line)
            if k:
                path = ".".join(table + _parts(k.group(1)))
                self.index.setdefault(path, no)
                self.spans.setdefault(path, (no, no))
                last_key = path
                # keys of an inline table on the same line: `limits = { memory = "1G" }`
                rest = line[k.end():]
                for inner in re.finditer(r"""(?:[{,]\s*)([A-Za-z0-9_-]+|"[^"]*")\s*=""", rest):
                    self.index.setdefault(path + "." + _parts(inner.group(1))[0], no)
            elif last_key is not None and line.strip() and not line.lstrip().startswith("#"):
                start, _ = self.spans[last_key]
                self.spans[last_key] = (start, no)

    def line_of(self, key: str, value: object = None) -> int | None:
        """The line of `key` (dotted path); with `value`, the line in the key's
        value that holds it (for one bad element of a multi-line array)."""
        if value is not None and isinstance(value, (str, int, float)) and key in self.spans:
            start, end = self.spans[key]
            needles = [f'"{value}"', f"'{value}'"] if isinstance(value, str) else [str(value)]
            for no in range(start, end + 1):
                if any(n in self.lines[no - 1] for n in needles):
                    return no
        parts = key.split(".")
        while parts:
            got = self.index.get(".".join(parts))
            if got is not None:
                return got
            parts.pop()
        return None
