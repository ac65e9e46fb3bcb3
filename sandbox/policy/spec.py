"""The policy file format as data: every table, key and value kind.

One table drives the loader's validation, `sandbox policy show`, and the test
that checks docs/policy.schema.json against what the loader really accepts,
so the three cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from sandbox.policy.model import (AUDIT_FILES, NETWORK_MODES, SYSCALL_PROFILES, VIOLATION_ACTIONS,
                                  WORKDIR_MODES)


@dataclass(frozen=True)
class Kind:
    """How one key's value is checked. `name` is one of:

    string, bool, name_list (extends), path_list, size, duration, count,
    limit_size, limit_duration (a size/duration or "unlimited"), enum,
    syscall_list, envname_list, env_table, credential_list, net_allow_list
    (HOST:PORT entries, sandbox.netproxy.rules).
    """
    name: str
    choices: tuple[str, ...] = ()
    merge: str = "override"   # override | union | table | own (not inherited through extends)


TOP = {
    "name": Kind("string", merge="own"),
    "description": Kind("string", merge="own"),
    "best_effort": Kind("bool"),
    "extends": Kind("name_list", merge="own"),
}

TABLES: dict[str, dict[str, Kind]] = {
    "filesystem": {
        "read": Kind("path_list", merge="union"),
        "write": Kind("path_list", merge="union"),
        "exec": Kind("path_list", merge="union"),
        "deny": Kind("path_list", merge="union"),
        "tmp_size": Kind("size"),
        "scratch_exec": Kind("bool"),
        "workdir": Kind("enum", WORKDIR_MODES),
        "allow_credentials": Kind("credential_list", merge="union"),
        "output_size": Kind("size"),
        "output_inodes": Kind("count"),
    },
    "network": {"mode": Kind("enum", NETWORK_MODES), "unix": Kind("path_list", merge="union"),
                "allow": Kind("net_allow_list", merge="union"), "deny_private": Kind("bool"),
                "dns": Kind("bool")},
    "limits": {
        "cpu": Kind("limit_duration"),
        "wall": Kind("limit_duration"),
        "memory": Kind("limit_size"),
        "file_size": Kind("limit_size"),
        "processes": Kind("limit_count"),
        "open_files": Kind("limit_count"),
        "monitor_cpu": Kind("limit_duration"),
    },
    "syscalls": {
        "profile": Kind("enum", SYSCALL_PROFILES),
        "allow": Kind("syscall_list", merge="union"),
        "deny": Kind("syscall_list", merge="union"),
        "on_violation": Kind("enum", VIOLATION_ACTIONS),
    },
    "audit": {"files": Kind("enum", AUDIT_FILES), "records": Kind("count")},
    "env": {
        "keep": Kind("envname_list", merge="union"),
        "set": Kind("env_table", merge="table"),
    },
}

UNLIMITED = "unlimited"
