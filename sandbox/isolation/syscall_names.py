"""Syscall names known to this machine's libseccomp, for policy validation."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def syscall_number(name: str) -> int | None:
    """The native number of `name`, or None when libseccomp does not know it."""
    import pyseccomp
    try:
        nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE if hasattr(pyseccomp.Arch, "NATIVE")
                                       else pyseccomp.system_arch(), name)
    except (ValueError, OSError, TypeError):
        return None
    return nr if isinstance(nr, int) and nr >= 0 else None


def is_known_syscall(name: str) -> bool:
    return syscall_number(name) is not None
