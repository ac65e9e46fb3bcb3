"""Syscall names known on x86_64, for policy validation and filter compilation.

Backed by the static table in `syscall_table.py` (libseccomp's names plus the
newer calls it lacks), so neither the policy loader nor the sandboxee has to
import the libseccomp binding at start-up.
"""
from __future__ import annotations

from sandbox.isolation.syscall_table import BY_NUMBER, X86_64


def syscall_number(name: str) -> int | None:
    """The x86_64 number of `name`, or None when unknown."""
    return X86_64.get(name)


def syscall_name(nr: int) -> str | None:
    return BY_NUMBER.get(nr)


def is_known_syscall(name: str) -> bool:
    return name in X86_64
