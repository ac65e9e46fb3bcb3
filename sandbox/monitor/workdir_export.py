"""Handing a copy-on-write work directory's changes back: bounded, inert, private.

Under ``filesystem.workdir = "copy-on-write"`` the work directory in the view
is an overlayfs whose upper layer lives on a tmpfs of ``output_size`` bytes
and ``output_inodes`` inodes (`sandbox.isolation.mounts._mount_overlay`): a
run that fills it gets ENOSPC, its pages are charged to the run's memory, and
nothing of it is on the host's disk while the run lasts. PID 1 hands the
monitor a descriptor of that tmpfs, as it does for ${OUTPUT}; once every
process of the sandbox is gone, `export` turns it into

- ``${OUTPUT}/workdir.changes/``: every file the run created or modified, with
  its content, copied by `copy_out` under the output's rules (regular files,
  directories and symlinks as text only; owner-only modes, no set-id bits;
  fifos, sockets and devices dropped; at most ``output_size`` bytes and
  ``output_inodes`` names);
- ``${OUTPUT}/workdir.deleted.json``: the names the run deleted (overlayfs
  whiteouts, 0/0 character devices) and the directories it replaced (opaque
  directories, listed with a trailing ``/``), relative to the work directory,
  as a JSON list.

Both were made by the launcher before the run (`sandbox.launcher.workdir_cow`),
empty, in the caller's output directory; the monitor, which runs as the
caller, fills them (the list is opened with O_NOFOLLOW, never created), and
the launcher removes whichever stayed empty.
"""
from __future__ import annotations

import json
import os

from sandbox.monitor import copy_out
from sandbox.protocol import OutputSummary

CHANGES = "workdir.changes"
DELETED = "workdir.deleted.json"


def export(cow_fd: int, output: str, *, max_bytes: int, max_entries: int) -> OutputSummary:
    """Copy the upper layer under the tmpfs `cow_fd` into `output` (see the module doc)."""
    deleted: list[str] = []
    try:
        upper = os.open("upper", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=cow_fd)
    except OSError as exc:
        return OutputSummary(error=f"no copy-on-write layer: {exc.strerror}")
    try:
        out = copy_out.open_dest(output)     # by the kernel, no symlink on the way
    except OSError as exc:
        os.close(upper)
        return OutputSummary(error=copy_out.cannot_open(output, exc))
    try:
        try:
            rep = copy_out.copy_out(upper, CHANGES, max_bytes=max_bytes,
                                    max_entries=max_entries, deleted=deleted, dir_fd=out)
        finally:
            os.close(upper)
        if deleted:
            try:
                fd = os.open(DELETED, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=out)
                with os.fdopen(fd, "w") as f:
                    json.dump(sorted(deleted), f, indent=0)
                    f.write("\n")
            except OSError as exc:
                rep.error = rep.error or f"cannot write {DELETED}: {exc.strerror}"
    finally:
        os.close(out)
    return rep
