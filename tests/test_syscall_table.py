"""The static syscall table agrees with libseccomp, the reference."""
from __future__ import annotations

import pyseccomp

from sandbox.isolation.syscall_profiles import EXTRA_X86_64
from sandbox.isolation.syscall_table import BY_NUMBER, X86_64


def test_every_libseccomp_name_has_the_same_number():
    checked = 0
    for nr in range(1024):
        try:
            name = pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, nr)
        except (ValueError, OSError):
            continue
        name = name.decode() if isinstance(name, bytes) else name
        if name and not name.startswith("UNKNOWN"):
            assert X86_64[name] == nr, name
            checked += 1
    assert checked > 300


def test_extras_and_reverse_map():
    for name, nr in EXTRA_X86_64.items():
        assert X86_64[name] == nr and BY_NUMBER[nr] == name
    assert X86_64["openat"] == 257 and BY_NUMBER[257] == "openat"
