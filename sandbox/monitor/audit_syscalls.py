"""Which argument of which audited syscall is a path, and what operation it is.

One table, `SPECS`: syscall name -> `Spec(slots, flags_arg, kind)`, where each
slot is ``(dirfd_arg | None, path_arg, operation | None, follow)``:
operation None means "from the open flags"; follow is True, False, or "at"
(follows unless AT_SYMLINK_NOFOLLOW is in the flags), "link" (follows only
with AT_SYMLINK_FOLLOW) or "watch" (inotify: unless IN_DONT_FOLLOW). Argument
layouts are x86_64 (see syscalls(2)). `bind`'s "path" argument is a sockaddr:
only a pathname AF_UNIX address names a file (the loop reads its sun_path).
`XATTR_NAME`: where the attribute's name is, recorded in the flags
(``name=user.x``).
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

O_ACCMODE = 3
O_WRONLY, O_RDWR = 1, 2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC, O_PATH = 0o200000, 0o400000, 0o2000000, 0o10000000
O_TMPFILE = 0o20000000 | O_DIRECTORY
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH = 0x100, 0x200, 0x400, 0x1000

OPEN_FLAG_NAMES = (
    (O_CREAT, "O_CREAT"), (O_EXCL, "O_EXCL"), (O_TRUNC, "O_TRUNC"), (O_APPEND, "O_APPEND"),
    (0o4000, "O_NONBLOCK"), (O_DIRECTORY, "O_DIRECTORY"), (O_NOFOLLOW, "O_NOFOLLOW"),
    (O_CLOEXEC, "O_CLOEXEC"), (O_PATH, "O_PATH"), (0o20000000, "__O_TMPFILE"),
    (0o400, "O_NOCTTY"), (0o40000, "O_DIRECT"), (0o1000000, "O_NOATIME"),
    (0o4010000, "O_SYNC"), (0o10000, "O_DSYNC"),
)
AT_FLAG_NAMES = ((AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"), (AT_REMOVEDIR, "AT_REMOVEDIR"),
                 (AT_SYMLINK_FOLLOW, "AT_SYMLINK_FOLLOW"), (AT_EMPTY_PATH, "AT_EMPTY_PATH"))
RENAME_FLAG_NAMES = ((1, "RENAME_NOREPLACE"), (2, "RENAME_EXCHANGE"), (4, "RENAME_WHITEOUT"))


class Spec(NamedTuple):
    slots: tuple[tuple[int | None, int, str | None, object], ...]
    flags_arg: int | None
    kind: str      # open | openat2 | creat | exec | path | stat | symlink | rename | link
    #                | xattr | watch | bind


def _s(kind: str, *slots: tuple[int | None, int, str | None, object],
       flags: int | None = None) -> Spec:
    return Spec(tuple(slots), flags, kind)


SPECS: dict[str, Spec] = {
    "open": _s("open", (None, 0, None, "open"), flags=1),
    "openat": _s("open", (0, 1, None, "open"), flags=2),
    "openat2": _s("openat2", (0, 1, None, "open")),
    "creat": _s("creat", (None, 0, "create", True)),
    "execve": _s("exec", (None, 0, "exec", True)),
    "execveat": _s("exec", (0, 1, "exec", "at"), flags=4),
    "truncate": _s("path", (None, 0, "write", True)),
    "unlink": _s("path", (None, 0, "delete", False)),
    "unlinkat": _s("path", (0, 1, "delete", False), flags=2),
    "rmdir": _s("path", (None, 0, "delete", False)),
    "mkdir": _s("path", (None, 0, "create", False)),
    "mkdirat": _s("path", (0, 1, "create", False)),
    "mknod": _s("path", (None, 0, "create", False)),
    "mknodat": _s("path", (0, 1, "create", False)),
    "rename": _s("rename", (None, 0, "delete", False), (None, 1, "create", False)),
    "renameat": _s("rename", (0, 1, "delete", False), (2, 3, "create", False)),
    "renameat2": _s("rename", (0, 1, "delete", False), (2, 3, "create", False), flags=4),
    "link": _s("link", (None, 0, "read", False), (None, 1, "create", False)),
    "linkat": _s("link", (0, 1, "read", "link"), (2, 3, "create", False), flags=4),
    "symlink": _s("symlink", (None, 1, "create", False)),
    "symlinkat": _s("symlink", (1, 2, "create", False)),
    "chmod": _s("path", (None, 0, "write", True)),
    "fchmodat": _s("path", (0, 1, "write", True)),
    "fchmodat2": _s("path", (0, 1, "write", "at"), flags=3),
    "chown": _s("path", (None, 0, "write", True)),
    "lchown": _s("path", (None, 0, "write", False)),
    "fchownat": _s("path", (0, 1, "write", "at"), flags=4),
    "utime": _s("path", (None, 0, "write", True)),
    "utimes": _s("path", (None, 0, "write", True)),
    "utimensat": _s("path", (0, 1, "write", "at"), flags=3),
    "futimesat": _s("path", (0, 1, "write", True)),
    "stat": _s("stat", (None, 0, "metadata", True)),
    "lstat": _s("stat", (None, 0, "metadata", False)),
    "newfstatat": _s("stat", (0, 1, "metadata", "at"), flags=3),
    "statx": _s("stat", (0, 1, "metadata", "at"), flags=2),
    "access": _s("stat", (None, 0, "metadata", True)),
    "faccessat": _s("stat", (0, 1, "metadata", True)),
    "faccessat2": _s("stat", (0, 1, "metadata", "at"), flags=3),
    "readlink": _s("stat", (None, 0, "metadata", False)),
    "readlinkat": _s("stat", (0, 1, "metadata", False)),
    # probe 1, F8: calls that name a path beyond the above
    "statfs": _s("stat", (None, 0, "metadata", True)),
    "chdir": _s("stat", (None, 0, "metadata", True)),
    "name_to_handle_at": _s("path", (0, 1, "metadata", "link"), flags=4),
    "getxattr": _s("xattr", (None, 0, "metadata", True)),
    "lgetxattr": _s("xattr", (None, 0, "metadata", False)),
    "getxattrat": _s("xattr", (0, 1, "metadata", "at"), flags=2),
    "listxattr": _s("xattr", (None, 0, "metadata", True)),
    "llistxattr": _s("xattr", (None, 0, "metadata", False)),
    "listxattrat": _s("xattr", (0, 1, "metadata", "at"), flags=2),
    "setxattr": _s("xattr", (None, 0, "write", True)),
    "lsetxattr": _s("xattr", (None, 0, "write", False)),
    "setxattrat": _s("xattr", (0, 1, "write", "at"), flags=2),
    "removexattr": _s("xattr", (None, 0, "write", True)),
    "lremovexattr": _s("xattr", (None, 0, "write", False)),
    "removexattrat": _s("xattr", (0, 1, "write", "at"), flags=2),
    "file_getattr": _s("path", (0, 1, "metadata", "at"), flags=4),
    "file_setattr": _s("path", (0, 1, "write", "at"), flags=4),
    "inotify_add_watch": _s("watch", (None, 1, "read", "watch"), flags=2),
    "bind": _s("bind", (None, 1, "create", False)),
}
XATTR_NAME = {"getxattr": 1, "lgetxattr": 1, "getxattrat": 3, "setxattr": 1, "lsetxattr": 1,
              "setxattrat": 3, "removexattr": 1, "lremovexattr": 1, "removexattrat": 3}
IN_DONT_FOLLOW = 0x02000000
AF_UNIX = 1
SOCKADDR_UN = 110       # sizeof(struct sockaddr_un)

# Syscalls after which a name may have become (or stopped being) a symlink.
INVALIDATES = frozenset({"unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
                         "link", "linkat", "symlink", "symlinkat"})


def open_operation(flags: int) -> str:
    if flags & O_PATH:
        return "metadata"
    if flags & O_CREAT or (flags & O_TMPFILE) == O_TMPFILE:
        return "create"
    if flags & O_ACCMODE or flags & O_TRUNC:
        return "write"
    return "read"


@functools.lru_cache(maxsize=4096)
def format_open(flags: int) -> str:
    acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(flags & O_ACCMODE, "O_ACCMODE")
    names = [acc]
    rest = flags & ~O_ACCMODE
    for bit, name in OPEN_FLAG_NAMES:
        if rest & bit == bit and bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(f"{rest:#o}")
    return "|".join(names)


@functools.lru_cache(maxsize=1024)
def format_bits(flags: int, kind: str) -> str:
    table = RENAME_FLAG_NAMES if kind == "rename" else AT_FLAG_NAMES
    names, rest = [], flags
    for bit, name in table:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def sun_path(addr: bytes) -> str | None:
    """The file a bind() address names: the sun_path of a pathname AF_UNIX sockaddr, or
    None (another family, an abstract name, an autobind)."""
    if len(addr) < 3 or int.from_bytes(addr[:2], "little") != AF_UNIX or addr[2] == 0:
        return None
    return os.fsdecode(addr[2:].split(b"\0", 1)[0])


def follows(mode: object, flags: int) -> bool:
    if mode is True or mode is False:
        return mode
    if mode == "open":
        return not flags & O_NOFOLLOW
    if mode == "at":
        return not flags & AT_SYMLINK_NOFOLLOW
    if mode == "link":
        return bool(flags & AT_SYMLINK_FOLLOW)
    if mode == "watch":
        return not flags & IN_DONT_FOLLOW
    return True


def check_table() -> None:
    """Every name here is a syscall this machine's table knows (used by the tests)."""
    from sandbox.isolation import syscall_profiles as sp
    missing = [n for n in SPECS if sp.syscall_number(n) is None]
    if missing:
        raise AssertionError(f"unknown syscalls in SPECS: {missing}")


__all__ = ["SPECS", "Spec", "XATTR_NAME", "INVALIDATES", "open_operation", "format_open", "format_bits",
           "follows", "sun_path", "os"]
