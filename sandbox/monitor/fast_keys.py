"""What the audit loop puts in its compiled loop's cache (sandbox/monitor/notify_fast.py).

The Python loop (`AuditLoop._handle`) decides each first call; when its answer
was a plain CONTINUE resting on nothing but the call's key and the resolver's
directory cache, `Keys.put` gives the compiled loop that key, and, when the
final name lies in a directory whose every name the policy decides alike
(`AuditEngine.children_alike`), the directory's spelling too (a *directory
key*), for that call and for the run's other (syscall, flags) pairs keyed by a
directory before (an import stats one file and opens another). A key's record
is the one `_handle` would make; the whole cache is cleared with the
resolver's directory cache (`Root.on_forget`), on which every key rests.

Why a module: these are the rules that make a cached answer the Python loop's
own (tests/test_notify_fast.py compares both loops' records), kept apart from
the loop that receives and answers.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from sandbox.audit.verdicts import AuditEngine
from sandbox.monitor import audit_syscalls as S
from sandbox.monitor.audit_paths import Paths
from sandbox.monitor.notify_fast import FastPath
from sandbox.monitor.root_walk import join

MAX_DKINDS = 8      # (syscall, flags) pairs a new directory key is made for at once


class Keys:
    """One run's puts into its `FastPath`."""

    def __init__(self, fast: FastPath, paths: Paths, engine: AuditEngine,
                 specs: Any, flag_text: Callable[..., str | None]) -> None:
        self._fast = fast
        self.paths = paths
        self.engine = engine
        self.specs = specs             # syscall number -> (name, audit_syscalls.Spec)
        self.flag_text = flag_text     # AuditLoop._flag_text
        self.kinds: dict[tuple[int, int], None] = {}   # keyed by a directory, oldest first

    def put(self, nr: int, flags: int, raw: str, info: list[Any],
            record: tuple[Any, ...]) -> None:
        """Let the compiled loop answer the next calls with this key; `info`: what the
        answer rests on (`record_path.canonical`'s)."""
        fast, root = self._fast, self.paths.root
        if root is None:
            return
        rawb = os.fsencode(raw)
        d, name = info[0], info[1]
        dirfd, off = -1, 0
        if name is not None:
            nameb = os.fsencode(name)
            if not rawb.endswith(b"/" + nameb):
                return
            try:
                dirfd = root.dir_fd(d)   # kept by the root; closing it clears the cache
            except OSError:
                return
            off = len(rawb) - len(nameb)
        if root.on_forget is None:
            root.on_forget = fast.clear
        elif root.on_forget != fast.clear:
            return
        fast.put(nr, flags, rawb, dirfd, off, record)
        if len(info) == 4:
            self._dput(nr, flags, rawb, dirfd, info[2], info[3], record)

    def _dput(self, nr: int, flags: int, rawb: bytes, dirfd: int, d: str, name: str,
              record: tuple[Any, ...]) -> None:
        """And any other name spelled in the same directory, when the policy decides
        every name there alike (`AuditEngine.children_alike`): the record is then the
        directory's real path joined with the name (notify_fast.c, directory keys).
        `dirfd` >= 0: the final name is followed, so re-examined per call there."""
        nameb = os.fsencode(name)
        if "/" in name or not rawb.endswith(b"/" + nameb) or record[2] != join(d, name) \
                or not self.engine.children_alike(d):
            return
        prefix = rawb[:len(rawb) - len(nameb)]
        plain = os.fsencode(d) + (b"" if d.endswith("/") else b"/")
        op, call, _, flag_text, allowed, rule = record
        if not self._fast.dput(nr, flags, prefix, dirfd, dirfd >= 0 and prefix == plain,
                               (op, call, d, flag_text, allowed, rule)):
            return
        # the run's other calls keyed by a directory before (an import stats a file and
        # opens another): this directory answers them too, each with its own record
        kinds = self.kinds
        kinds.pop((nr, flags), None)
        for nr2, flags2 in list(kinds):
            self._sibling(nr2, flags2, prefix, plain, d)
        kinds[(nr, flags)] = None
        if len(kinds) > MAX_DKINDS:
            del kinds[next(iter(kinds))]

    def _sibling(self, nr: int, flags: int, prefix: bytes, plain: bytes, d: str) -> None:
        """The directory key of syscall `nr` with `flags` for directory `d` spelled
        `prefix`: the record `AuditLoop._handle` would make of a call naming a plain
        name there (the policy decides every such name alike, so any name's verdict is
        theirs)."""
        assert self.paths.root is not None
        call, spec = self.specs[nr]
        _, _, op, follow = spec.slots[0]
        if op is None:
            op = S.open_operation(flags)
        v = self.engine.decide(op, join(d, "-"))
        if not v.allowed and v.rule.startswith("filesystem.deny"):
            return                                  # answered EACCES by Python
        dirfd = -1
        if S.follows(follow, flags):
            try:
                dirfd = self.paths.root.dir_fd(d)
            except OSError:
                return
        self._fast.dput(nr, flags, prefix, dirfd, dirfd >= 0 and prefix == plain,
                        (op, call, d, self.flag_text(call, spec.kind, flags, 0, ()),
                         v.allowed, v.rule))

