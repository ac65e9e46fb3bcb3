"""`[filesystem] workdir = "copy-on-write"`: a writable work directory that leaves the host's alone.

The launcher side of it (the mount is `sandbox.isolation.mounts`' "overlay" step):

- `grant`: the resolved policy gets a write rule for the work directory, so the
  engine, the audit, the broker and Landlock all see it writable; the planner
  makes that rule, and `mark` flags it ``cow`` so the mount layer mounts an
  overlayfs there instead of binding the host directory writable. Where a rule
  already grants writing the work directory (`--write .` on top of `default`),
  that explicit grant wins and the host's directory is written directly; a
  single file that says both is refused by the loader. A work directory the
  policy does not let the program read is not overlaid (it is not in the view).
- The overlay's upper and work directories live on a tmpfs of ``output_size``
  bytes and ``output_inodes`` inodes that PID 1 mounts in the sandbox's own
  mount namespace (`sandbox.isolation.mounts`), charged to the run's memory
  like the private /tmp and the output: the host's disk holds nothing of it
  while the run lasts, and a run that fills it gets ENOSPC
  (`RunResult.hints` says so). The lower layer is the host's work directory,
  which the kernel never writes to. ``<rundir>/cow`` is only its mountpoint.
- The export: once every process of the sandbox is gone, the monitor copies
  the upper layer into ``${OUTPUT}/workdir.changes/`` with the output's rules
  (`sandbox.monitor.workdir_export`: regular files, directories and symlinks
  as text; owner-only modes, no set-id bits; fifos, sockets and devices
  dropped; bounded by ``output_size`` and ``output_inodes``) and lists the
  deletions (overlayfs whiteouts and opaque directories), relative to the work
  directory, in ``${OUTPUT}/workdir.deleted.json`` (a JSON list; a name ending
  in ``/`` is a directory whose earlier content is all gone). Both are made
  here, empty, before the run and denied to the sandbox, so the program can
  neither pre-plant nor redirect them through ``${OUTPUT}``; `export` then
  removes whichever stayed empty.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace

from sandbox.errors import InputError
from sandbox.isolation import beneath
from sandbox.isolation.context import RunPaths
from sandbox.monitor.workdir_export import CHANGES, DELETED
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule
from sandbox.policy.workdir_overlay import overlaid, with_write



def cow_dir(paths: RunPaths) -> str:
    return os.path.join(paths.rundir, "cow")


def wanted(policy: Policy) -> bool:
    return policy.filesystem.workdir == "copy-on-write"


def grant(policy: Policy, paths: RunPaths) -> tuple[Policy, bool]:
    """The resolved `policy` with the work directory writable (to be overlaid)
    and the output's changes directory, made here, denied to the run; and
    whether the overlay applies (not when a rule already grants the write)."""
    # "/" is no work directory (the rules decide); an explicit write grant (`--write .`)
    # wins (the host's, directly); a work directory not in the view is not overlaid
    work = overlaid(policy, paths.workdir)
    if work is None:
        return policy, False
    out = beneath.open_dir(paths.output)   # the launcher's real path: no link on it now
    try:
        try:
            os.mkdir(CHANGES, 0o700, dir_fd=out)
            os.close(os.open(DELETED, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=out))
        except FileExistsError:
            raise InputError(f"the output directory {paths.output} already holds "
                             f"{CHANGES} or {DELETED} (an earlier copy-on-write run's); "
                             "choose another output directory or remove them") from None
    finally:
        os.close(out)
    os.makedirs(cow_dir(paths), 0o700, exist_ok=True)   # rundir: the launcher's own mkdtemp
    policy = with_write(policy, work)
    fs = policy.filesystem
    # Link-free by construction (paths.output is), so the deny names what was made.
    changes, deleted = os.path.join(paths.output, CHANGES), os.path.join(paths.output, DELETED)
    return policy.replace(filesystem=replace(fs, deny=tuple(fs.deny) + (changes, deleted))), True


def mark(plan: FsPlan, paths: RunPaths) -> FsPlan:
    """The plan with the work directory's rule flagged copy-on-write.

    Write rules beneath it (an output directory inside the work directory) are
    kept as rules of their own even where the planner folded them into the work
    directory's: they are the host's, bound over the overlay, not copied."""
    work = os.path.realpath(paths.workdir)
    rules: list[FsRule] = []
    for r in plan.rules:
        if r.write and os.path.realpath(r.path) == work:
            r = replace(r, cow=True, rule=r.rule + '; filesystem.workdir = "copy-on-write"')
        rules.append(r)
    out = os.path.realpath(paths.output)
    if out.startswith(work.rstrip("/") + "/") and not any(
            os.path.realpath(r.path) == out for r in rules):
        rules.append(FsRule(path=out, read=True, write=True, rule="filesystem.write: ${OUTPUT}"))
    rules.sort(key=lambda r: tuple(p for p in r.path.split("/") if p))
    return replace(plan, rules=tuple(rules))


EMPTIES = (CHANGES, DELETED)   # what `grant` makes in the output, and `export` removes


def export(paths: RunPaths, remove_empty: bool = True) -> tuple[str | None, list[str]]:
    """After the monitor's export: the changes directory (None when the run changed
    nothing) and the deleted names; what stayed empty is removed, unless
    `remove_empty` is false (the launcher then discards the whole output directory it
    made, `tidy.discard_empty_run`, or calls this again)."""
    try:
        out = beneath.open_dir(paths.output)
    except OSError:
        return None, []    # swapped for a link during the run: the monitor copied nothing
    try:
        return _export(out, paths.output, remove_empty)
    finally:
        os.close(out)


def _export(out: int, output: str, remove_empty: bool) -> tuple[str | None, list[str]]:
    deleted: list[str] = []
    try:
        fd = os.open(DELETED, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=out)
    except FileNotFoundError:
        fd = -1
    if fd >= 0:
        with os.fdopen(fd) as f:
            text = f.read(64 << 20)
        if text.strip():
            deleted = [str(n) for n in json.loads(text)]
        elif remove_empty:
            os.unlink(DELETED, dir_fd=out)
    try:
        changes = beneath.open_dir(CHANGES, out)
    except OSError:
        return None, deleted    # gone, or not a directory of the monitor's any more
    try:
        empty = not os.listdir(changes)
    finally:
        os.close(changes)
    if not deleted and empty:
        if remove_empty:
            os.rmdir(CHANGES, dir_fd=out)
        return None, []
    return os.path.join(output, CHANGES), deleted


def cleanup(paths: RunPaths) -> None:
    """The layer's mountpoint in the rundir (the tmpfs itself went with the sandbox)."""
    try:
        os.rmdir(cow_dir(paths))
    except OSError:
        pass
