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
- The overlay's upper and work directories live in the run's private rundir
  (``<rundir>/cow``, on the host, never in the view); the lower layer is the
  host's work directory, which the kernel never writes to.
- `export`: after the run (every process of the sandbox gone, so nothing can
  race it), the upper layer becomes ``${OUTPUT}/workdir.changes/``: every file
  the run created or modified, with its full content. Deletions, which
  overlayfs records as whiteouts (character devices 0/0) and opaque
  directories, are taken out of that tree and listed, relative to the work
  directory, in ``${OUTPUT}/workdir.deleted.json`` (a JSON list; a name ending
  in ``/`` is a directory whose earlier content is all gone). Nothing else
  special survives: fifos, sockets and device nodes are dropped, symlinks are
  kept as links (never followed). The changes directory is made, empty, before
  the run and denied to the sandbox, and so is the (empty) deletion list, so
  the program can neither pre-plant nor redirect them through ``${OUTPUT}``
  (the list is written with O_NOFOLLOW all the same).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from dataclasses import replace

from sandbox.errors import InputError
from sandbox.isolation.context import RunPaths
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule

CHANGES = "workdir.changes"
DELETED = "workdir.deleted.json"
_OPAQUE = "user.overlay.opaque"


def cow_dir(paths: RunPaths) -> str:
    return os.path.join(paths.rundir, "cow")


def wanted(policy: Policy) -> bool:
    return policy.filesystem.workdir == "copy-on-write"


def grant(policy: Policy, paths: RunPaths) -> tuple[Policy, bool]:
    """The resolved `policy` with the work directory writable (to be overlaid)
    and the output's changes directory, made here, denied to the run; and
    whether the overlay applies (not when a rule already grants the write)."""
    from sandbox.policy import decide
    work = os.path.realpath(paths.workdir)
    if work == "/":
        return policy, False   # an overlay of the whole root is no work directory: the rules decide
    if decide(policy, "write", work).allowed:
        return policy, False   # an explicit write grant (`--write .`) wins: the host's, directly
    if not decide(policy, "read", work).allowed:
        return policy, False   # the work directory is not in the view: nothing to overlay
    changes = os.path.join(paths.output, CHANGES)
    deleted = os.path.join(paths.output, DELETED)
    for name in (CHANGES, DELETED):
        if os.path.lexists(os.path.join(paths.output, name)):
            raise InputError(f"the output directory {paths.output} already holds {name} "
                             "(an earlier copy-on-write run's); choose another output "
                             "directory or remove it")
    os.mkdir(changes, 0o700)
    os.close(os.open(deleted, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    os.makedirs(os.path.join(cow_dir(paths), "upper"), 0o700)
    os.makedirs(os.path.join(cow_dir(paths), "work"), 0o700)
    os.chmod(os.path.join(cow_dir(paths), "upper"), stat.S_IMODE(os.stat(work).st_mode))
    fs = policy.filesystem
    return policy.replace(filesystem=replace(
        fs, write=tuple(fs.write) + (work,),
        deny=tuple(fs.deny) + (os.path.realpath(changes), os.path.realpath(deleted)))), True


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


def export(paths: RunPaths) -> tuple[str | None, list[str]]:
    """Move the upper layer into the output (see the module doc). Returns the changes
    directory (None when the run changed nothing) and the deleted names."""
    upper = os.path.join(cow_dir(paths), "upper")
    changes = os.path.join(paths.output, CHANGES)
    listing = os.path.join(paths.output, DELETED)
    if not os.path.isdir(upper) or os.path.islink(changes) or not os.path.isdir(changes):
        return None, []
    deleted = _take_deletions(upper)
    fd = os.open(listing, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "w") as f:
        if deleted:
            json.dump(deleted, f, indent=0)
            f.write("\n")
    if not deleted:
        os.unlink(listing)
    os.rmdir(changes)          # made empty by `grant`, denied to the sandbox
    try:
        os.rename(upper, changes)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_tree(upper, changes)
    os.chmod(changes, 0o755)
    if not deleted and not os.listdir(changes):
        os.rmdir(changes)
        return None, []
    return changes, deleted


def _take_deletions(upper: str) -> list[str]:
    """Remove whiteouts and opaque marks from `upper`; the names they stood for."""
    deleted: list[str] = []
    for top, dirs, files, dfd in os.fwalk(upper, follow_symlinks=False):
        rel = os.path.relpath(top, upper)
        rel = "" if rel == "." else rel + "/"
        for name in dirs:
            try:
                where = os.path.join(top, name)    # the sandbox is gone: nothing races this
                if os.getxattr(where, _OPAQUE, follow_symlinks=False) == b"y":
                    deleted.append(rel + name + "/")
                    os.removexattr(where, _OPAQUE, follow_symlinks=False)
            except OSError:
                pass
        for name in files:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                deleted.append(rel + name)
                os.unlink(name, dir_fd=dfd)
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                os.unlink(name, dir_fd=dfd)      # fifo, socket, device: not a change to keep
    return sorted(deleted)


def _copy_tree(src: str, dst: str) -> None:
    """A copy that never follows a link the run made (other filesystem than the rundir's)."""
    os.mkdir(dst, 0o755)
    for top, dirs, files, dfd in os.fwalk(src, follow_symlinks=False):
        out = os.path.join(dst, os.path.relpath(top, src))
        for name in dirs:
            os.mkdir(os.path.join(out, name), 0o755)
        for name in files:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=dfd), os.path.join(out, name))
                continue
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            with os.fdopen(fd, "rb") as r, open(os.path.join(out, name), "xb") as w:
                shutil.copyfileobj(r, w)
            os.chmod(os.path.join(out, name), stat.S_IMODE(st.st_mode) & 0o777)


def cleanup(paths: RunPaths) -> None:
    """The overlay's work directory leaves a mode-0 `work` behind: make it removable.

    Only that one directory, never through a link: `<cow>/lower` is a symlink to
    the host's work directory, and the upper layer holds what the run made."""
    work = os.path.join(cow_dir(paths), "work", "work")
    try:
        if stat.S_ISDIR(os.lstat(work).st_mode):
            os.chmod(work, 0o700)
    except OSError:
        pass
