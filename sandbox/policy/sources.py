"""The files a loaded policy came from, and whether they still say the same thing.

A warm pool (sandbox.monitor.pools) holds sandboxes prepared for one policy:
when a file that policy was read from changes, the pool must go, before any
of its sandboxes serves a run. The loader records every file it read (the
policy's own and each `extends` target) as a `SourceFile`: identity, size,
mtime, ctime and the SHA-256 of the exact bytes it parsed.

`changed` is cheap when nothing changed (one stat per file) and exact when
something did: a differing stat is confirmed by hashing the content again, so
a `touch` or a rewrite with the same bytes keeps the pool, and an edit that
restores the old mtime (utime) is still caught by ctime, which no caller can
set, and by the hash. The search path's directories are recorded too (stat
only): a file dropped there can shadow a name an `extends` resolved.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SourceFile:
    path: str            # real path
    sha256: str          # of the bytes the loader parsed ("" for a directory)
    ino: int = 0
    dev: int = 0
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    is_dir: bool = False

    @classmethod
    def of_bytes(cls, path: str, data: bytes, st: os.stat_result) -> "SourceFile":
        """What the loader read: `data` from the descriptor `st` describes (no re-read,
        so no race between the bytes parsed and the bytes hashed)."""
        import hashlib   # here: OpenSSL's start-up (~2 ms) only where a policy is hashed
        return cls(os.path.realpath(path), hashlib.sha256(data).hexdigest(), *_stat(st))

    @classmethod
    def of_dir(cls, path: str) -> "SourceFile":
        try:
            st = os.stat(path)
        except OSError:
            return cls(path, "", is_dir=True)   # absent: its appearance is a change
        return cls(path, "", *_stat(st), is_dir=True)

    def current(self) -> "SourceFile | None":
        """This file as it is now, if it still says the same thing, else None.
        The returned record carries the new stat, so the next check is one stat again."""
        try:
            st = os.stat(self.path)
        except OSError:
            return self if self.is_dir and self.ino == 0 else None
        now = _stat(st)
        if now == (self.ino, self.dev, self.size, self.mtime_ns, self.ctime_ns):
            return self
        if self.is_dir or now[2] != self.size:
            return None
        try:
            with open(self.path, "rb") as f:
                data = f.read(self.size + 1)
        except OSError:
            return None
        import hashlib
        if hashlib.sha256(data).hexdigest() != self.sha256:
            return None
        return replace(self, ino=now[0], dev=now[1], size=now[2], mtime_ns=now[3],
                       ctime_ns=now[4])


def _stat(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns


Sources = tuple[SourceFile, ...]


def refresh(sources: Sources) -> Sources | None:
    """`sources` with fresh stats when every file still says the same thing; None when
    any changed (its content, or a directory's entries) or went away."""
    out = []
    for s in sources:
        now = s.current()
        if now is None:
            return None
        out.append(now)
    return tuple(out)


def digest(sources: Sources) -> str:
    """One hash for what the files say (paths and contents; not stats, not directories):
    equal for the same policy files with the same bytes."""
    import hashlib
    h = hashlib.sha256()
    for s in sorted((s for s in sources if not s.is_dir), key=lambda s: s.path):
        h.update(s.path.encode("utf-8", "surrogateescape") + b"\0" + s.sha256.encode() + b"\n")
    return h.hexdigest()
