"""How `sandbox-init` is compiled: one rule for setup.py's build and the launcher's.

Standalone (no import from the package), so setup.py loads this file before the
package is installed. Two `sandbox-init` processes live for every live sandbox
(the stub's waiting half and PID 1), so the init's own pages count in issue 14's
memory per sandbox. Linked statically against musl (Debian's musl-tools, which
scripts/install.sh installs), one keeps 16-20 KiB of private pages and maps ~70
KiB; against glibc's static libc, 44-48 KiB private and ~700 KiB mapped
(docs/benchmarks.md, "The init's own pages"). Without musl it is built with the
system compiler as before: the same program, only heavier.
"""
from __future__ import annotations

import os
import shutil

# static: it runs in a sandbox whose view may hold no library
CFLAGS = ("-static", "-Os", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-s")
MUSL = "musl-gcc"


def init_cc(fallback: str = "cc") -> str:
    """The compiler for the init: SANDBOX_INIT_CC when set, else musl's wrapper when it
    is installed, else `fallback` (the build's $CC or Python's configured one)."""
    forced = os.environ.get("SANDBOX_INIT_CC", "").split()
    if forced:
        return forced[0]
    if shutil.which(MUSL):
        return MUSL
    return fallback.split()[0] if fallback.split() else "cc"
