"""The mount layer: a fresh root built from binds, never a shadowed host root.

Runs in PID 1 of the new user+PID+mount namespaces, after the namespace layer
made `/` recursively private, for root and for unprivileged callers alike.
Everything not named by the `FsPlan` simply does not exist in the view: a
denial by absence, which no path trick (``..``, symlinks, hard links) can get
around, unlike a view made by hiding parts of the host root.

The exact order (`mount_plan.mount_table` computes steps 2-4, `apply` runs them all):

1. ``<rundir>/view`` is created on the host (the rundir is private to the run
   and writable by the caller) and a tmpfs of the sandbox's own is mounted
   there (`scratch_at`): it holds the mask file and the generated /etc files,
   so nothing of the view is written to the host's disk; in it, ``root`` gets
   a small tmpfs as the new root (nosuid, nodev, noexec). A pooled sandbox
   builds the same over the monitor host's scratch directory, before its run
   (sandbox/isolation/prebuilt.py).
2. In path order, parents before children (so a tree that lives under host
   ``/tmp``, such as a pytest ``tmp_path`` or a venv, is bound *on top of* the
   private ``/tmp``):
   - ``/tmp``: a fresh tmpfs, mode 1777, ``size = fs_plan.tmp_size``; noexec
     unless ``fs_plan.scratch_exec`` (or an exec rule for exactly ``/tmp``).  A rule for exactly
     ``/tmp``, ``/proc`` or ``/dev`` never binds the host directory: those three
     are always the sandbox's own.
   - ``/proc``: a new procfs for the new PID namespace, read-only (so neither
     sysctls nor ``/proc/sysrq-trigger`` can be written even when the caller is
     real root mapped to uid 0), nosuid, nodev, noexec.
   - ``/dev``: a tiny tmpfs holding bind mounts of the host nodes null, zero,
     full, random, urandom and tty (mknod is impossible unprivileged), the
     symlinks fd, stdin, stdout, stderr, and the mountpoints of any plan rules
     beneath ``/dev``; then one recursive read-only (nosuid, noexec) for the
     whole of it, then a private ``/dev/shm`` tmpfs (nosuid, nodev, noexec,
     at most 16 MiB).
   - the copy-on-write work directory (an `FsRule` with ``cow``): an overlayfs
     over the host directory, upper and work layers on a tmpfs of
     ``output_size`` bytes and ``output_inodes`` inodes (charged to the run's
     memory, never the host's disk), whose descriptor goes to the monitor
     (``ctx.cow_fd``) for the export after the run (`_mount_overlay`);
     rules beneath it without a write grant of their own that need other
     flags are bound onto themselves inside the overlay ("rebind");
   - each `FsRule`: its host path is resolved by the kernel (`resolve`) and must
     lead where it led when the launcher planned it (`FsRule.real`; else ELOOP:
     a component was swapped for a link in between); the
     mountpoint is made in the view (a directory or an empty file, like the
     source), the source is cloned recursively (open_tree), the whole copy
     gets nosuid, nodev (except under ``/dev``), noexec unless ``exec``, and
     read-only unless ``write``, with one ``mount_setattr(AT_RECURSIVE)``,
     and only then is attached (move_mount). Sources and targets are opened
     by descriptor without following a symlink (beneath.py): a path swapped
     for a link after the plan fails the run (ELOOP) instead of binding it.
     Symlinks on the way to a rule (Debian's ``/lib -> usr/lib``) are recreated
     in the view with the same text, so both spellings work.  Rules that
     resolve to the same host path are merged (rights OR-ed).  A rule whose path
     does not exist on the host grants nothing and is skipped.
   - ``${OUTPUT}`` (``fs_plan.output``), when a rule at or above it puts it in
     the view: a new tmpfs of ``output_size`` bytes and ``output_inodes``
     inodes (nosuid, nodev, noexec unless ``exec``, read-only unless
     ``write``), over whatever an ancestor bind brought; rules beneath it
     bind nothing. A descriptor of its root goes to the monitor
     (``ctx.output_fd``), which copies it out inert after the run
     (`sandbox.monitor.copy_out`): so a program can neither fill the host
     disk nor leave a setuid file, a device or a fifo for later.
3. masks, after every bind: a masked directory gets an empty read-only tmpfs
   of mode 0, a masked file a read-only bind of an empty mode-0 file.  Masks
   that are not inside the view are skipped (there is nothing to hide).
4. the root tmpfs is made read-only, so nothing can be created at the top
   level of the view (``/tmp`` and ``/dev/shm`` are the writable scratch
   places). If a rule granted an ancestor of the rundir, the copy of the
   scratch tmpfs (and the view under construction in it) that its recursive
   bind brought along was detached right after that bind.
5. ``pivot_root(".", ".")`` from inside the new root, then the old root (now
   stacked on top) is detached with ``umount2(MNT_DETACH)``: no put-old
   directory is ever created.  Finally ``chdir`` to ``paths.workdir`` when it
   is in the view, else ``/``.

Kernels without ``mount_setattr`` (before 5.12) take the fallback in
`sandbox.isolation.mount_calls`.

Cost: about 1 ms per sandbox for a typical plan, most of it the mount system
calls themselves and page copies in the freshly forked process; `prepare`
lets a warm fork server compute the table before forking.

Every failure raises ``SetupError("mounts", ...)`` naming the path and errno.
"""
from __future__ import annotations

import errno
import os
import stat
from contextlib import ExitStack

from sandbox.errors import SetupError
from sandbox.isolation import beneath, libc, sysview
from sandbox.isolation.context import ContainContext
from sandbox.isolation.mount_calls import bind, fd_path, set_attrs, set_attrs_fd
from sandbox.isolation.mount_plan import (ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY,
                                          prepare, under)
from sandbox.isolation.mount_steps import Prepared, Step
from sandbox.policy.plan import FsPlan

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
SHM_MAX = 16 * 1024 * 1024


def _fail(what: str, path: str, exc: OSError) -> SetupError:
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return SetupError("mounts", f"{what} {path}: {os.strerror(exc.errno or 0)} ({code})")


def _mount_fresh(root_fd: int, path: str, fstype: str, flags: int, data: str | None = None) -> None:
    """A new filesystem of the sandbox's own (tmpfs, proc) at `path` in the view, its
    mountpoint made and reached beneath `root_fd` (a workdir "/" rule binds the
    host's root at the top of the view first)."""
    dst = beneath.make_mountpoint(root_fd, path, True)
    try:
        libc.mount(fstype, fd_path(dst), fstype, flags, data)
    finally:
        os.close(dst)


def _make_mountpoint(target: str, is_dir: bool) -> None:
    """A directory to mount on in a place that is the run's own (`<rundir>/cow`: the
    launcher's mkdtemp), unless there is one."""
    if os.path.lexists(target):
        return
    os.mkdir(target, 0o755)


def _bind_terminal(dev: str, tty: str) -> None:
    """The run's own pty (`sandbox exec -t`, made by the monitor outside the sandbox) at
    /dev/console, as container runtimes put a container's terminal, so ttyname(3)
    finds it (glibc scans /dev for the node); nothing else of the host's /dev/pts.
    Not at its host name under /dev/pts: that is the sandbox's own devpts instance
    (sysview.private_pts), which `script` and `expect` need in a -t run too."""
    if not tty.startswith("/dev/pts/") or "/" in tty[len("/dev/pts/"):]:
        return
    target = dev + "/console"
    os.mknod(target, stat.S_IFREG | 0o600)
    libc.mount(tty, target, None, libc.MS_BIND)


def _mount_dev(root: str, root_fd: int, shm_size: int, under_dev: list[Step],
               tty: str | None = None) -> None:
    """/dev: node binds, links, then one recursive read-only, then /dev/shm.

    Mountpoints of plan rules beneath /dev are made here, before /dev turns
    read-only. Node binds are read-only too: writing a device still works, but
    a caller that is real root could otherwise chmod the host's nodes.
    """
    dev = root + "/dev"     # by name below: only in this fresh tmpfs of the run's own
    _mount_fresh(root_fd, "/dev", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
                 "mode=0755,size=64k,nr_inodes=64")
    for node in DEV_NODES:
        target = f"{dev}/{node}"
        os.mknod(target, stat.S_IFREG | 0o600)
        try:
            libc.mount("/dev/" + node, target, None, libc.MS_BIND)
        except FileNotFoundError:
            os.unlink(target)   # the host lacks it (tty in some containers)
    os.mkdir(dev + "/shm", 0o755)
    if tty:
        _bind_terminal(dev, tty)
    for name, text in DEV_LINKS:
        os.symlink(text, f"{dev}/{name}")
    for step in under_dev:
        if step.kind == "bind":
            os.close(beneath.make_mountpoint(root_fd, step.path, step.is_dir))
        elif step.kind == "link":
            _make_link(root_fd, step)
    sysview.make_pts_points(dev)
    set_attrs(dev, ATTR_RDONLY | ATTR_NOSUID | ATTR_NOEXEC, True)
    libc.mount("tmpfs", dev + "/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
               f"mode=1777,size={shm_size}")
    sysview.private_pts(dev)


def _mount_output(root_fd: int, step: Step, plan: FsPlan) -> int:
    """The output tmpfs; returns a descriptor of its root for the monitor's copy-out."""
    flags = 0
    for attr, ms in ((ATTR_NOSUID, libc.MS_NOSUID), (ATTR_NODEV, libc.MS_NODEV),
                     (ATTR_NOEXEC, libc.MS_NOEXEC), (ATTR_RDONLY, libc.MS_RDONLY)):
        flags |= ms if step.attrs & attr else 0
    dst = beneath.make_mountpoint(root_fd, step.path, True)
    try:
        libc.mount("tmpfs", fd_path(dst), "tmpfs", flags,
                   f"mode=0700,size={max(plan.output_size, 4096)},"
                   f"nr_inodes={max(plan.output_inodes, 1)}")
    finally:
        os.close(dst)
    return libc.openat2(root_fd, step.path.strip("/"),
                        os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, beneath.VIEW)


def _mount_overlay(step: Step, root_fd: int, rundir: str, plan: FsPlan) -> int:
    """The copy-on-write work directory: an overlayfs whose lower layer is the host's
    directory (never written to) and whose upper and work layers are on a tmpfs of
    the output's bounds (``output_size``, ``output_inodes``: the changes end up in
    the output), mounted at ``<rundir>/cow`` in this mount namespace only. Returns
    a descriptor of that tmpfs for the monitor's export (`sandbox.monitor.workdir_export`).

    The tmpfs is detached from ``<rundir>/cow`` once the overlay holds it, so no
    later recursive bind of an ancestor of the rundir can copy it into the view:
    the overlay and the descriptor keep it alive, and nothing else reaches it.
    The layers are named relative to it (the lower one through a symlink made
    there, to a descriptor opened as the plan resolved the directory:
    beneath.py), so no host path, whatever characters it holds, is parsed as
    mount options. ``userxattr``: the only form allowed in a user namespace
    (tmpfs has user xattrs since Linux 6.6); it also keeps index, metacopy and
    redirect_dir off, and xino off keeps inode numbers the lower layer's."""
    cow = os.path.join(rundir, "cow")
    _make_mountpoint(cow, True)
    libc.mount("tmpfs", cow, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
               f"mode=0700,size={max(plan.output_size, 4096)},"
               f"nr_inodes={max(plan.output_inodes, 1) + 4}")
    layer = os.open(cow, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with ExitStack() as fds:
            src = beneath.open_source(step.source)
            fds.callback(os.close, src)
            os.symlink(fd_path(src), "lower", dir_fd=layer)
            os.mkdir("upper", 0o700, dir_fd=layer)
            os.chmod("upper", stat.S_IMODE(os.fstat(src).st_mode), dir_fd=layer)
            os.mkdir("work", 0o700, dir_fd=layer)
            dst = beneath.make_mountpoint(root_fd, step.path, True)
            fds.callback(os.close, dst)
            here = os.open(".", os.O_PATH | os.O_CLOEXEC)
            fds.callback(os.close, here)
            os.fchdir(layer)
            fds.callback(os.fchdir, here)
            libc.mount("overlay", fd_path(dst), "overlay", libc.MS_NOSUID | libc.MS_NODEV,
                       "lowerdir=lower,upperdir=upper,workdir=work,userxattr,xino=off")
        top = beneath.open_in_view(root_fd, step.path)
        try:
            set_attrs_fd(top, step.attrs, True, step.path)
        finally:
            os.close(top)
        libc.umount2(cow, libc.MNT_DETACH | libc.UMOUNT_NOFOLLOW)
    except BaseException:
        os.close(layer)
        raise
    return layer


def _run_step(step: Step, root: str, plan: FsPlan, mask_file: list[str],
              under_dev: list[Step], tty: str | None = None,
              held: dict[str, int] | None = None, rundir: str = "", root_fd: int = -1,
              seen: dict[str, tuple[int, int]] | None = None) -> None:
    """One step. What lives in a host tree bound into the view (binds, rebinds,
    masks, the output, the overlay) is reached by descriptor beneath `root_fd`,
    never by a path a symlink could redirect (beneath.py)."""
    target = root + step.path
    if step.kind == "tmp":
        flags = libc.MS_NOSUID | libc.MS_NODEV | (0 if step.exec else libc.MS_NOEXEC)
        _mount_fresh(root_fd, "/tmp", "tmpfs", flags, f"mode=1777,size={max(plan.tmp_size, 4096)}")
    elif step.kind == "proc":
        _mount_fresh(root_fd, "/proc", "proc",
                     libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    elif step.kind == "dev":
        _mount_dev(root, root_fd, max(4096, min(plan.tmp_size, SHM_MAX)), under_dev, tty)
    elif step.kind in ("bind", "rebind"):
        with ExitStack() as fds:
            if step.kind == "bind":
                dst = beneath.make_mountpoint(root_fd, step.path, step.is_dir)
                fds.callback(os.close, dst)
                src = beneath.open_source(step.source)
                fds.callback(os.close, src)
                if seen is not None:
                    st = os.fstat(src)
                    seen[step.source] = (st.st_dev, st.st_ino)
            else:       # a part of the overlay, onto itself with its own rights
                src = dst = beneath.open_in_view(root_fd, step.path)
                fds.callback(os.close, src)
            bind(src, dst, step.attrs, True, target)
        beside = os.path.dirname(root)   # the scratch tmpfs the root lives in (scratch_at)
        if step.kind == "bind" and under(beside, step.source):
            # The recursive bind copied the scratch, and the view under construction in
            # it, into the view: cut it off.
            libc.umount2(root + beside, libc.MNT_DETACH | libc.UMOUNT_NOFOLLOW)
    elif step.kind == "output":
        fd = _mount_output(root_fd, step, plan)
        if held is None:
            os.close(fd)
        else:
            held["output"] = fd
    elif step.kind == "overlay":
        fd = _mount_overlay(step, root_fd, rundir, plan)
        if held is None:
            os.close(fd)
        else:
            held["cow"] = fd
    elif step.kind == "link":
        _make_link(root_fd, step)
    elif step.kind == "mask":
        _mask(step, root, root_fd, mask_file, seen)


def _make_link(root_fd: int, step: Step) -> None:
    """A symlink the plan met on a rule's path, made at its place in the view unless
    something is there (a bound host tree shows the host's own). Its parent is
    reached beneath the view's root without following a link (beneath.make_dirs):
    the place may lie in a writable host tree, where another run could have swapped
    a component for a link to the host since the table was made (ELOOP then)."""
    parent, _, name = step.path.rstrip("/").rpartition("/")
    pfd = beneath.make_dirs(root_fd, parent)
    try:
        os.symlink(step.source, name, dir_fd=pfd)
    except FileExistsError:
        pass
    finally:
        os.close(pfd)


def _mask(step: Step, root: str, root_fd: int, mask_file: list[str],
          seen: dict[str, tuple[int, int]] | None = None) -> None:
    """A masked directory: an empty read-only tmpfs of mode 0; a masked file: a
    read-only bind of an empty mode-0 file. Nothing to hide when it is not in the view.
    `seen`: the masked object's (st_dev, st_ino): a mask is mounted on it, and goes if
    the host replaces it (a mountpoint unlinked in another namespace is detached), so
    a pooled view is served only while it is still there (prebuilt.py)."""
    try:
        dst = beneath.open_in_view(root_fd, step.path)
    except FileNotFoundError:
        return
    if seen is not None:
        st = os.fstat(dst)
        seen[step.path] = (st.st_dev, st.st_ino)
    try:
        ro = libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
        if step.is_dir:
            libc.mount("tmpfs", fd_path(dst), "tmpfs", ro, "mode=000,size=4k,nr_inodes=1")
            return
        if not mask_file:
            # Beside the view, not in it: when a rule binds a read-only tree at the
            # view's top (workdir "/"), the view has no room left for a new file.
            mask_file.append(os.path.join(os.path.dirname(root), "mask"))
            os.mknod(mask_file[0], stat.S_IFREG)
        src = os.open(mask_file[0], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            bind(src, dst, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC, False,
                  root + step.path)
        finally:
            os.close(src)
    finally:
        os.close(dst)


def build_view(ctx: ContainContext) -> str:
    """Steps 1-4: build the new root beside the rundir; returns its host path."""
    rundir = os.path.realpath(ctx.paths.rundir)
    root = new_root(scratch_at(os.path.join(rundir, "view")))
    steps = table_of(ctx).steps
    mask_file: list[str] = []
    held = run_steps(ctx, steps, root, mask_file, rundir)
    system_view(ctx, root)
    seal_root(root, steps, mask_file)
    ctx.output_fd = held.get("output")
    ctx.cow_fd = held.get("cow")
    return root


SCRATCH_SIZE = 16 << 20   # the root's tmpfs is mounted inside it; the /etc copies are small


def scratch_at(where: str) -> str:
    """A tmpfs of the sandbox's own at `where` (made if missing), beside the view: it holds
    the view's root, the mask file and the generated /etc files (sysview.etc_files), so
    none of them is written to the host's disk, and it goes with the old root at the
    pivot. A pooled view is built over the monitor host's scratch directory the same
    way (sandbox/isolation/prebuilt.py), so the two views are alike to the last mount."""
    try:
        if not os.path.isdir(where):
            os.mkdir(where, 0o700)
        libc.mount("tmpfs", where, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
                   f"mode=0700,size={SCRATCH_SIZE}")
    except OSError as exc:
        raise _fail("scratch tmpfs at", where, exc) from None
    return where


def new_root(beside: str) -> str:
    """Step 1: the view's root, a small tmpfs at `<beside>/root`."""
    root = os.path.join(beside, "root")
    try:
        os.mkdir(root, 0o700)
        libc.mount("tmpfs", root, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
                   "mode=0755,size=1m")
    except OSError as exc:
        raise _fail("new root tmpfs at", root, exc) from None
    return root


def table_of(ctx: ContainContext) -> Prepared:
    """The run's mount table: the monitor's, for this very plan (runspec.pid1_start), else
    computed here (Landlock's rules use its real paths too)."""
    plan = ctx.fs_plan
    try:
        table = ctx.mount_table
        if table is None or (table.plan is not plan and table.plan != plan):
            table = ctx.mount_table = prepare(plan)
    except OSError as exc:
        raise _fail("resolving", exc.filename or "a plan path", exc) from None
    return table


def run_steps(ctx: ContainContext, steps: list[Step], root: str, mask_file: list[str],
              rundir: str, seen: dict[str, tuple[int, int]] | None = None) -> dict[str, int]:
    """Steps 2-3 of `steps` on the view at `root`; returns the descriptors the output and
    the copy-on-write steps made ("output", "cow"). `seen`: the (st_dev, st_ino) of each
    bound source and each masked object as it was mounted on (a pooled view's,
    sandbox/isolation/prebuilt.py)."""
    under_dev = [s for s in steps if s.path.startswith("/dev/") and s.kind in ("bind", "link")]
    held: dict[str, int] = {}
    with ExitStack() as fds:
        root_fd = _open_root(root, fds)
        for step in steps:
            try:
                _run_step(step, root, ctx.fs_plan, mask_file, under_dev, ctx.tty, held,
                          rundir, root_fd, seen)
            except OSError as exc:
                for fd in held.values():
                    os.close(fd)
                raise _fail(f"{step.kind}", step.path, exc) from None
            if step.path == "/" and step.kind == "bind":
                root_fd = _open_root(root, fds)     # the old one is beneath the new root
    return held


def seal_root(root: str, steps: list[Step], mask_file: list[str]) -> None:
    """Step 4: the mask file goes, and the root turns read-only."""
    try:
        if mask_file:
            os.unlink(mask_file[0])
        # A rule for "/" itself (workdir "/") stacked the host's root on the tmpfs: the
        # mount at `root` is then that bind, whose rights its own step set (an exec grant
        # must not turn noexec here); the tmpfs beneath is hidden anyway.
        if not any(s.kind == "bind" and s.path == "/" for s in steps):
            set_attrs(root, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC, False)
    except OSError as exc:
        raise _fail("read-only remount of", root, exc) from None


def _open_root(root: str, fds: ExitStack) -> int:
    """An O_PATH descriptor of the top of the view under construction (our own tmpfs,
    in our own mount namespace): the root every target is opened beneath."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    fds.callback(os.close, fd)
    return fd


def system_view(ctx: ContainContext, root: str) -> None:
    """What programs expect of a system (sysview.py): HOME, the generated /etc files,
    the sandbox's own cgroups at /sys/fs/cgroup. After the binds and masks, before
    the root turns read-only."""
    ro = ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC
    try:
        sysview.home(root)
        sysview.etc_files(root, os.path.dirname(root), ctx.fs_plan.masks,
                          os.getuid(), os.getgid(), ctx.hostname,
                          lambda target: set_attrs(target, ro, False),
                          resolver=ctx.policy.network.mode == "allowlist"
                          and ctx.policy.network.dns)
        sysview.cgroup_tree(root, ctx.cgroup_view)
    except OSError as exc:
        raise _fail("system view at", exc.filename or root, exc) from None


def enter_view(root: str, workdir: str) -> None:
    """Step 5: pivot_root into `root`, drop the old root, chdir."""
    try:
        os.chdir(root)
        libc.pivot_root(".", ".")
        libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
    except OSError as exc:
        raise _fail("pivot_root into", root, exc) from None
    try:
        os.chdir(workdir)
    except OSError:
        pass  # not in the view: stay at /


def apply(ctx: ContainContext) -> None:
    # a pooled sandbox built the policy's part of its view before the run was known
    # (sandbox/isolation/prebuilt.py): only the run's own part is left
    root = ctx.prebuilt.finish(ctx) if ctx.prebuilt is not None else build_view(ctx)
    enter_view(root, ctx.paths.workdir)
    ctx.active.append("mounts")
    _open_scratch(ctx)


def _open_scratch(ctx: ContainContext) -> None:
    """An O_PATH descriptor of the private /tmp for the monitor, which reads its free
    space after the run (ExitReport.tmp_full). Opened here, before Landlock and
    seccomp: a notified open before the listener reached the monitor would block."""
    try:
        ctx.scratch_fd = os.open("/tmp", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return   # no figure, no hint: never a reason to fail the run
    ctx.keep_fds = (*ctx.keep_fds, ctx.scratch_fd)
    try:
        ctx.shm_fd = os.open("/dev/shm", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    ctx.keep_fds = (*ctx.keep_fds, ctx.shm_fd)
