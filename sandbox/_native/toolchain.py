"""How `sandbox-init` is compiled: one rule for setup.py's build and the launcher's.

Standalone (no import from the package), so setup.py loads this file before the
package is installed. Two `sandbox-init` processes live for every live sandbox
(the stub's waiting half and PID 1), so the init's own pages count in issue 14's
memory per sandbox. Linked statically against musl (Debian's musl-tools, which
scripts/install.sh installs), one keeps 16-20 KiB of private pages and maps ~70
KiB; against glibc's static libc, 44-48 KiB private and ~700 KiB mapped
(docs/benchmarks-journal.md, "The init's own pages"). Without musl it is built with the
system compiler as before: the same program, only heavier.
"""
from __future__ import annotations

import os
import shutil

# static: it runs in a sandbox whose view may hold no library
CFLAGS = ("-static", "-Os", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-s")
MUSL = "musl-gcc"


# The thin `sandbox exec` client (client.c) runs outside any sandbox, but is static too
# when musl is there: a dynamically linked C program's start (the loader mapping and
# relocating libc) cost 1.36-1.66 ms per exec from Python's subprocess.run against
# 0.38-0.48 for a static musl one (200 runs each, a loaded machine), and a warm
# `sandbox exec` pays one. Without musl it stays dynamic: glibc's static getpwuid (its
# HOME fallback) needs the NSS libraries at run time anyway. musl's reads /etc/passwd
# only, so a user known through other NSS sources, with HOME unset, finds no daemon and
# takes the cold path: slower, never wrong.
CLIENT_CFLAGS = ("-Os", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-s")


def client_build(fallback: str = "cc") -> tuple[str, tuple[str, ...]]:
    """The client's compiler and flags: static with musl, else `fallback`, dynamic."""
    cc = init_cc(fallback)
    if os.path.basename(cc) == MUSL:
        return cc, ("-static", *CLIENT_CFLAGS)
    return _program(fallback), CLIENT_CFLAGS


def init_cc(fallback: str = "cc") -> str:
    """The compiler for the init: SANDBOX_INIT_CC when set, else musl's wrapper when it
    is installed, else `fallback` (the build's $CC or Python's configured one)."""
    forced = os.environ.get("SANDBOX_INIT_CC", "").split()
    if forced:
        return forced[0]
    if shutil.which(MUSL):
        return MUSL
    return _program(fallback)


def _program(command: str) -> str:
    """The program of a compiler command such as $CC ("ccache gcc" runs ccache)."""
    words = command.split()
    return words[0] if words else "cc"
