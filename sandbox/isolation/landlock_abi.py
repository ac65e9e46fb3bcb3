"""Landlock's kernel interface: its access rights, its structures, the ABI probe.

Kept apart from the layer (landlock.py) and the grant around masks
(landlock_around.py), which both use it; nothing here decides a rule.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

from sandbox.isolation import libc

CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

FS_ABI1 = (1 << 13) - 1                    # EXECUTE .. MAKE_SYM
FS_BY_ABI = {1: FS_ABI1, 2: FS_ABI1 | REFER, 3: FS_ABI1 | REFER | TRUNCATE,
             4: FS_ABI1 | REFER | TRUNCATE}
FS_LATEST = FS_ABI1 | REFER | TRUNCATE | IOCTL_DEV   # ABI 5 and later
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

READ = READ_FILE | READ_DIR
WRITE = (READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG
         | MAKE_SOCK | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM | TRUNCATE | REFER)
DEV = READ | WRITE_FILE | IOCTL_DEV


class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class NetPortAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def probe_abi() -> int:
    """The kernel's Landlock ABI version; OSError when there is none (EOPNOTSUPP:
    disabled at boot; ENOSYS: not built in), for `sandbox doctor` to say which."""
    return libc.syscall("landlock_create_ruleset", None, ctypes.c_size_t(0),
                        ctypes.c_uint32(CREATE_RULESET_VERSION))


@lru_cache(maxsize=1)
def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    try:
        return probe_abi()
    except OSError:
        return 0


def handled(abi: int, network_mode: str) -> tuple[int, int, int]:
    """(fs, net, scoped) masks for this ABI: the best it offers."""
    fs = FS_BY_ABI.get(abi, FS_LATEST) if abi > 0 else 0
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 and network_mode == "none" else 0
    if abi >= 4 and network_mode == "allowlist":
        net = NET_CONNECT_TCP      # connect: the proxy's port only (`_add_proxy_rule`)
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def rights_for(read: bool, write: bool, exec_: bool) -> int:
    r = READ if (read or write or exec_) else 0
    if exec_:
        r |= EXECUTE
    if write:
        r |= WRITE
    return r
