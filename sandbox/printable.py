"""Rendering strings the sandboxed program controls, for terminals and for JSON.

A recorded path, a symlink's target, a program's error message: the program
chose every byte. Printed raw, ESC sequences repaint or retitle the caller's
terminal, CR overwrites a line, BEL rings, C1 controls (U+009B is a one-byte
CSI) and bidirectional overrides (U+202E) reorder what the caller reads
(issue 10, finding 12). And a path need not be UTF-8 at all: the kernel takes
any bytes but NUL and "/" in a name.

`printable(x)` is THE one way such text reaches a terminal: every character
that is not printable becomes an escape, so the output holds only printable
characters and spaces, on one line. It is unambiguous: a backslash is doubled,
an undecodable byte is ``\\xNN``, a control or invisible code point is
``\\uXXXX`` (``\\t``, ``\\n``, ``\\r`` for the common three), so two different
inputs never look the same.

`json_text(s)` is for JSON: the text, and the exact bytes (hex) when the text
alone would not be lossless (the path was not valid UTF-8).
"""
from __future__ import annotations

import os

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:          # an undecodable byte (surrogateescape)
        return f"\\x{cp - 0xDC00:02x}"
    if ch == " " or ch.isprintable():
        return ch
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def printable(x: str | bytes | None) -> str:
    """`x` made safe for a terminal: only printable characters, one line, unambiguous."""
    if x is None:
        return ""
    if isinstance(x, bytes):
        x = x.decode("utf-8", "surrogateescape")
    elif not isinstance(x, str):
        x = str(x)
    if x.isprintable() and "\\" not in x:
        return x
    return "".join(map(_escape, x))


def as_bytes(s: str) -> bytes:
    """The exact bytes of a path read from the sandbox (decoded with surrogateescape);
    any other lone surrogate is kept too (surrogatepass), so this never raises."""
    try:
        return os.fsencode(s)
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


def from_bytes(b: bytes) -> str:
    """Inverse of `as_bytes` for paths (lossless: invalid UTF-8 becomes surrogates)."""
    return b.decode("utf-8", "surrogateescape")


def json_text(s: str) -> tuple[str, str | None]:
    """(text fit for JSON, hex of the exact bytes or None when the text is exact).

    The text replaces what is not valid UTF-8 with U+FFFD; the hex is then
    the lossless form (``bytes.fromhex``)."""
    try:
        s.encode("utf-8")
        return s, None
    except UnicodeEncodeError:
        raw = as_bytes(s)
        return raw.decode("utf-8", "replace"), raw.hex()
