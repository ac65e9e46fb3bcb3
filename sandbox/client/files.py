"""Writing a run's output files on the caller's machine without trusting their names.

The names come from the run (through the server): `../../x`, `/etc/passwd`,
a name with a newline, a path through a directory the caller's destination
already holds as a symlink. Whatever the server lets through, the client
refuses to write outside the destination directory:

* a name is split on "/" and every part must be a plain name (not "", ".",
  "..", no NUL): otherwise `UnsafePath` and nothing is written;
* directories are walked with openat(O_NOFOLLOW | O_DIRECTORY) from the
  destination's descriptor, so a symlink planted in the destination (or by a
  concurrent writer) is never followed;
* files are created with O_CREAT | O_EXCL | O_NOFOLLOW: an existing file or
  link is never overwritten (`FileExistsError`).

What the caller's disk pays is bounded by what the run could allocate, not
by the names and apparent sizes it chose: a run of 58 MiB of data listed 81
names of 4.79 GiB (sparse files, hard links), and fetching them filled a
2 GiB disk. So zero blocks are written as holes, a second name of a file is
made a hard link here too (`link_under`), and `plan` refuses, before anything
is fetched, a run whose files add up to more than `max_bytes` to transfer.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING

from sandbox.client.errors import ClientError

if TYPE_CHECKING:
    from sandbox.client.models import FileEntry

MAX_BYTES = 1 << 30       # what download_all fetches unless told more (apparent bytes)
_BLOCK = 64 * 1024        # zero blocks of this size become holes


class UnsafePath(ClientError):
    """A file name from the server would leave the destination directory."""


class TooLarge(ClientError):
    """A run's outputs add up to more bytes than the caller agreed to fetch."""


def parts(name: str) -> list[str]:
    """The components of a relative output path, or UnsafePath."""
    if not name or name.startswith("/") or "\0" in name:
        raise UnsafePath(f"refusing output path {name!r}: not a relative path")
    out = name.split("/")
    for p in out:
        if p in ("", ".", ".."):
            raise UnsafePath(f"refusing output path {name!r}: {p!r} is not a plain name")
    return out


def plan(entries: Sequence["FileEntry"], max_bytes: int = MAX_BYTES
         ) -> tuple[list["FileEntry"], list["FileEntry"]]:
    """(files to fetch, second names to link) of a listing, every name checked first;
    TooLarge when the files' apparent sizes add up to more than `max_bytes`."""
    fetch = [e for e in entries if e.kind == "file"]
    links = [e for e in entries if e.kind == "link" and e.target]
    for e in (*fetch, *links):
        parts(e.name)
    total = sum(e.size for e in fetch)
    if total > max_bytes:
        held = sum(e.allocated for e in fetch)
        raise TooLarge(f"the run's {len(fetch)} output files are {total} bytes to fetch "
                       f"({held} of them held on the server's disk; the rest are holes, read "
                       f"as zeros), over the bound of {max_bytes}: raise max_bytes "
                       "(sandbox runs download --max-bytes) or fetch files by name")
    return fetch, links


def _parent(stack: ExitStack, dest_dir: str, comps: list[str], create: bool) -> int:
    """A descriptor of dest_dir/comps[:-1], each level opened without following a link."""
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack.callback(os.close, fd)
    for comp in comps[:-1]:
        if create:
            try:
                os.mkdir(comp, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        fd = os.open(comp, flags_dir, dir_fd=fd)   # ELOOP/ENOTDIR on a planted link
        stack.callback(os.close, fd)
    return fd


class Sink:
    """A new file dest_dir/name, written chunk by chunk; zero blocks are left as holes.
    Use as a context manager: the file gets its full length when it closes."""

    def __init__(self, dest_dir: str, name: str, mode: int = 0o644) -> None:
        comps = parts(name)
        with ExitStack() as stack:
            dfd = _parent(stack, dest_dir, comps, create=True)
            self.fd = os.open(comps[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, mode & 0o777, dir_fd=dfd)
        self.path = os.path.join(dest_dir, *comps)
        self.length = 0

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        for at in range(0, len(view), _BLOCK):
            block = view[at:at + _BLOCK]
            if block == bytes(len(block)):
                os.lseek(self.fd, len(block), os.SEEK_CUR)
            else:
                while block:
                    block = block[os.write(self.fd, block):]
        self.length += len(view)

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            os.ftruncate(self.fd, self.length)     # a hole at the end still counts
        finally:
            os.close(self.fd)


def write_under(dest_dir: str, name: str, chunks: Iterable[bytes], mode: int = 0o644) -> str:
    """Write `chunks` to dest_dir/name (made as needed); returns the path written."""
    with Sink(dest_dir, name, mode) as sink:
        for chunk in chunks:
            sink.write(chunk)
    return sink.path


def link_under(dest_dir: str, name: str, target: str) -> str:
    """Make dest_dir/name another name of dest_dir/target (both checked as `parts`)."""
    comps, tcomps = parts(name), parts(target)
    with ExitStack() as stack:
        dfd = _parent(stack, dest_dir, comps, create=True)
        tfd = _parent(stack, dest_dir, tcomps, create=False)
        os.link(tcomps[-1], comps[-1], src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
    return os.path.join(dest_dir, *comps)
