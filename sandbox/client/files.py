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
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import ExitStack

from sandbox.client.errors import ClientError


class UnsafePath(ClientError):
    """A file name from the server would leave the destination directory."""


def parts(name: str) -> list[str]:
    """The components of a relative output path, or UnsafePath."""
    if not name or name.startswith("/") or "\0" in name:
        raise UnsafePath(f"refusing output path {name!r}: not a relative path")
    out = name.split("/")
    for p in out:
        if p in ("", ".", ".."):
            raise UnsafePath(f"refusing output path {name!r}: {p!r} is not a plain name")
    return out


def write_under(dest_dir: str, name: str, chunks: Iterable[bytes], mode: int = 0o644) -> str:
    """Write `chunks` to dest_dir/name (made as needed); returns the path written."""
    comps = parts(name)
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    with ExitStack() as stack:
        fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        stack.callback(os.close, fd)
        for comp in comps[:-1]:
            try:
                os.mkdir(comp, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            fd = os.open(comp, flags_dir, dir_fd=fd)   # ELOOP/ENOTDIR on a planted link
            stack.callback(os.close, fd)
        out = os.open(comps[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, mode & 0o777, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
    return os.path.join(dest_dir, *comps)
