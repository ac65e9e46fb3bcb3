"""A granted tree with masks beneath it, granted by Landlock entry by entry around them.

Landlock cannot carve a hole in a granted tree (its rules only add rights
beneath a directory), and the mount layer's mask over a denied file is a mount
the kernel detaches when the host replaces the file (docs/threat-model.md). So
a read-only rule with masks beneath it (any rule without the mount view) is
granted child by child instead (`around_masks` marks it, `add_around` adds the
rules); the layer itself (landlock.py) opens the rule's directory.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, NamedTuple

from sandbox.isolation import libc, mount_plan
from sandbox.isolation.landlock_abi import (FILE_RIGHTS, RULE_PATH_BENEATH, WRITE_FILE,
                                            PathBeneathAttr)

Stamp = tuple[str, int, int, int, int]   # a directory granted around masks, as listed


class PathRule(NamedTuple):
    path: str
    rights: int
    plan: bool = True   # a plan rule: a real path, opened without following any symlink
    # The real paths of masks beneath `path`: then the rule is granted entry by entry
    # around them (`around_masks`, `add_around`) instead of on `path` itself.
    around: tuple[str, ...] = ()


def around_masks(rules: list[PathRule], masks: tuple[str, ...], *,
                 writable: bool = True, resolve: bool = True) -> list[PathRule]:
    """The masks (deny inside allow) held by Landlock too, which cannot carve a hole in
    a granted tree: a rule with masks beneath it is marked to be granted child by
    child instead, down the directories that lead to a mask, leaving out the masks.
    Fail closed: those directories themselves get no right from the rule (they cannot
    be written directly; with the mount view the view's root rule still lets them be
    listed), symlinks among the children are not granted (a rule on one would grant
    its target), and entries created or replaced later (a new inode) are not covered.

    Why with the mount view too: the kernel detaches a mask whose file the host
    unlinks or renames over (another mount namespace), so a denied file the host
    replaces during a run (`passwd` writing /etc/shadow) would show through a tree
    Landlock grants whole. `writable=False` leaves writable rules whole: a writable
    directory granted child by child could not have its new files opened (Landlock
    has no "files this sandbox made"), so there the mask alone holds
    (docs/threat-model.md). `resolve=False`: `masks` are real paths already (the mount
    table's; in the view a mask, a bind of a deleted file, no longer resolves to its
    own path)."""
    real_masks = set()
    for m in masks:
        found = mount_plan.resolve(m) if resolve else None
        real_masks.add(found[0] if found is not None else os.path.normpath(m))
    out: list[PathRule] = []
    for rule in rules:
        below = tuple(sorted(m for m in real_masks if m.startswith(rule.path.rstrip("/") + "/")))
        split = below and (writable or not rule.rights & WRITE_FILE)
        out.append(rule._replace(around=below) if split else rule)
    return out


def add_around(ruleset: int, dir_fd: int, path: str, masks: tuple[str, ...],
                allowed: int, stamps: list[Stamp] | None = None) -> None:
    """Rules on each entry of directory `dir_fd` (at `path`) but the masks and links,
    down the subdirectories that lead to a mask. Each entry is opened relative to the
    directory, without following a link. An entry that changed since it was listed (a
    link now, a file for a directory) is not granted. This runs for every run of every
    built-in policy (their /etc holds the denied secrets: ~150 entries), so the loop
    does one dictionary lookup, one open, one add and one close per entry. (A compiled
    loop was tried: 0.44 against 1.36 ms for /etc in a fork of a warm interpreter, but
    no difference in the Landlock layer of a run, 1.27-1.92 against 1.32-1.65 ms,
    alternated: the kernel's side dominates there.)"""
    base = path.rstrip("/") + "/"
    below: dict[str, list[str]] = {}      # first name under `path` -> the masks it leads to
    for m in masks:
        name, _, rest = m[len(base):].partition("/")
        below.setdefault(name, []).append(m if rest else "")
    if stamps is not None:
        st = os.fstat(dir_fd)
        stamps.append((path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    try:
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in it]
    except OSError:
        return            # cannot be listed (its mode): nothing beneath it is granted
    attr = PathBeneathAttr()
    add, ref = _add_rule_call(ruleset, attr)
    opath = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    for name, is_link, is_dir in entries:
        lead = below.get(name)
        if is_link or (lead is not None and ("" in lead or not is_dir)):
            continue      # a link, a mask, or no directory where a mask was
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                         if lead else opath, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            if lead:
                add_around(ruleset, fd, base + name, tuple(lead), allowed, stamps)
                continue
            attr.allowed_access = allowed if is_dir else allowed & FILE_RIGHTS
            attr.parent_fd = fd
            if attr.allowed_access:
                add(ref)      # an error: no longer what was listed, and not granted
        finally:
            os.close(fd)


def _add_rule_call(ruleset: int, attr: PathBeneathAttr) -> tuple[Callable[[Any], int], Any]:
    """landlock_add_rule(ruleset, PATH_BENEATH, &attr, 0) as one bound call, its
    arguments converted once: a call per entry of `add_around`'s loop."""
    call, rs = libc.bound_syscall("landlock_add_rule"), ctypes.c_int(ruleset)
    kind, flags = ctypes.c_int(RULE_PATH_BENEATH), ctypes.c_uint32(0)
    return (lambda ref: call(rs, kind, ref, flags)), ctypes.byref(attr)
