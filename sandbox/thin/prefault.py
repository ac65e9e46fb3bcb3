"""Copying, ahead of a request, the pages a fork of the daemon shares with it.

WHY: a run served by the daemon is a fork of it, and a fork shares every page
with its parent until one of them writes it; the first write of each page is a
fault that copies it. Python writes nearly every object it touches (reference
counts), so the fork's `sandbox exec` code took ~1,300 such faults between
the request and its end, about 3.7 us each on the 2-core machine: ~4 ms of a
warm `sandbox exec -- /bin/true` (page-fault counts from getrusage at marks in
the fork, 25 alternated runs, docs/benchmarks-journal.md). The spare fork
(sandbox.thin.fork) waits for its request anyway, so it copies those pages
while it waits: MADV_POPULATE_WRITE over the pages it still shares, one call
per run of them, in the kernel.

Only pages present and shared (pagemap: present, not exclusively mapped) are
populated, so nothing the daemon never touched is allocated: the spare's
memory becomes the daemon's anonymous memory (~14 MiB here) held privately,
for as long as it waits. A kernel without MADV_POPULATE_WRITE (before 5.14),
or a pagemap that cannot be read, leaves the spare as it was.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator

from sandbox.isolation import libc

# A pagemap entry is 8 bytes, little-endian; its top byte holds bit 63 (present, 0x80)
# and bit 56 (exclusively mapped, 0x01, Linux 4.2). Each top byte is mapped to b"s"
# (present and shared) or b"-", and runs of b"s" are found by `re`: C speed over the
# ~3,500 entries, where a Python loop over them cost more than the copies themselves.
_SHARED = bytes(ord("s") if b & 0x81 == 0x80 else ord("-") for b in range(256))
_RUN = re.compile(rb"s+")


def shared_runs() -> Iterator[tuple[int, int]]:
    """(address, length) of each run of pages that are present in a private writable
    mapping of this process and mapped by another process too."""
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/maps") as maps:
        areas = [line.split(maxsplit=2)[:2] for line in maps]
    with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
        for span, perms in areas:
            if perms != "rw-p":
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            pagemap.seek(lo // page * 8)
            flags = pagemap.read((hi - lo) // page * 8)[7::8].translate(_SHARED)
            for run in _RUN.finditer(flags):
                yield lo + run.start() * page, (run.end() - run.start()) * page


def prefault() -> int:
    """Copy every page this process shares (see the module's doc); the bytes copied,
    0 when the kernel cannot."""
    done = 0
    try:
        for addr, length in list(shared_runs()):
            libc.madvise(addr, length, libc.MADV_POPULATE_WRITE)
            done += length
    except OSError:
        pass     # EINVAL before Linux 5.14; an area gone meanwhile: the rest stays shared
    return done
