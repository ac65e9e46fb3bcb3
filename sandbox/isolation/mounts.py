"""The mount layer: a fresh root built from binds, never a shadowed host root.

Runs in PID 1 of the new user+PID+mount namespaces, after the namespace layer
made `/` recursively private, for root and for unprivileged callers alike.
Everything not named by the `FsPlan` simply does not exist in the view: a
denial by absence, which no path trick (``..``, symlinks, hard links) can get
around, unlike a view made by hiding parts of the host root.

The exact order (`mount_table` computes steps 2-4, `apply` runs them all):

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

Kernels without ``mount_setattr`` (before 5.12) fall back to
``MS_REMOUNT|MS_BIND`` on each mount of the bound tree (found in
``/proc/self/mountinfo``), OR-ing in the flags each already has (read with
``statvfs``): an unprivileged user may not clear a locked flag (nodev, nosuid,
noexec, read-only, atime), so omitting one would fail with EPERM.

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
from sandbox.isolation.mount_steps import Prepared, Step
from sandbox.policy.plan import FsPlan

ATTR_RDONLY, ATTR_NOSUID, ATTR_NODEV, ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8

# statvfs f_flag bits -> MS_* flags that must survive a remount (locked flags).
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME, _MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
_ST_TO_MS = ((os.ST_RDONLY, libc.MS_RDONLY), (os.ST_NOSUID, libc.MS_NOSUID),
             (os.ST_NODEV, libc.MS_NODEV), (os.ST_NOEXEC, libc.MS_NOEXEC),
             (os.ST_NOATIME, _MS_NOATIME), (os.ST_NODIRATIME, _MS_NODIRATIME))
_ST_RELATIME, _ST_NOATIME = os.ST_RELATIME, os.ST_NOATIME

SPECIAL = ("/tmp", "/proc", "/dev")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
SHM_MAX = 16 * 1024 * 1024
_MAX_LINKS = 40

_have_setattr = True  # cleared on ENOSYS; tests clear it to exercise the fallback


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def links_on_the_way(path: str) -> list[tuple[str, str]]:
    """The symlinks met while resolving `path`, as (symlink-free location, link text)."""
    out: list[tuple[str, str]] = []
    parts, cur, i, hops = list(_parts(path)), "/", 0, 0
    while i < len(parts):
        nxt = os.path.join(cur, parts[i])
        if os.path.islink(nxt):
            hops += 1
            if hops > _MAX_LINKS:
                break
            text = os.readlink(nxt)
            out.append((nxt, text))
            parts = list(_parts(os.path.normpath(os.path.join(cur, text)))) + parts[i + 1:]
            cur, i = "/", 0
        else:
            cur, i = nxt, i + 1
    return out


def _effective(merged: dict[str, list[bool]]) -> dict[str, tuple[bool, bool, str]]:
    """Rights as a union over enclosing rules (as Landlock and the engine see them),
    and how each needed mount is made: "bind" (the host path), "overlay" (the
    copy-on-write work directory) or "rebind" (a part of the overlay bound onto
    itself with other flags, so it stays copy-on-write).

    A rule inside another bind already appears in the view (same host tree);
    it needs a bind of its own only when its effective rights differ from the
    nearest enclosing bind's. A special mount (/tmp, /proc, /dev) between the
    two cuts the chain: what is bound beneath it starts afresh. Beneath an
    overlay, a rule with a write grant of its own is the host's (an output
    directory inside the work directory), every other rule stays in the overlay.
    """
    out: dict[str, tuple[bool, bool, str]] = {}
    eff: dict[str, tuple[bool, bool, str]] = {}
    for real in sorted(merged, key=_parts):
        cut = next((s for s in SPECIAL if _under(real, s)), None)
        write, exe = merged[real][0], merged[real][1]
        cow = len(merged[real]) > 3 and merged[real][3]
        nearest = None
        for anc in eff:   # already sorted: later ancestors are nearer
            if anc != real and _under(real, anc) and (cut is None or _under(anc, cut)):
                write, exe = write or eff[anc][0], exe or eff[anc][1]
                nearest = anc
        if cow:
            how = "overlay"
        elif nearest is not None and eff[nearest][2] != "bind" and not merged[real][0]:
            how = "rebind"
        else:
            how = "bind"
        eff[real] = (write, exe, "overlay" if how == "rebind" else how)
        if nearest is None or eff[nearest] != eff[real]:
            out[real] = (write, exe, how)
    return out


def resolve(path: str) -> tuple[str, bool] | None:
    """(real path, is a directory), or None when `path` does not exist.

    The kernel resolves it (open O_PATH, then read the descriptor's magic link):
    four system calls instead of one lstat per component plus Python's
    `realpath` bookkeeping, which dominated the cost of `mount_table`.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:   # no /proc: resolve in Python
            real = os.path.realpath(path)
    finally:
        os.close(fd)
    return real, is_dir


def mount_table(plan: FsPlan, real_of: dict[str, str] | None = None) -> list[Step]:
    """The view as an ordered list of steps, computed from the plan and the host.
    `real_of` (filled when given): each bound rule's path -> its real path, the one
    place the plan meets the host's symlinks (Landlock's rules use it: `Prepared`)."""
    merged: dict[str, list[bool]] = {}   # real path -> [write, exec, is_dir]
    links: dict[str, str] = {}
    tmp_exec = plan.scratch_exec
    for rule in plan.rules:
        if rule.path in SPECIAL:
            tmp_exec |= rule.path == "/tmp" and rule.exec
            continue
        found = resolve(rule.path)
        if found is not None and rule.real and found[0] != rule.real:
            # The engine decided on this path when the plan was made, where it led to
            # rule.real; it leads elsewhere now: a component swapped for a link (or
            # moved) since. Binding the new target would grant what nothing decided.
            raise OSError(errno.ELOOP, "resolves elsewhere than when the plan was made "
                          f"({found[0]}, not {rule.real}): swapped for a link?", rule.path)
        if found is not None and real_of is not None:
            real_of[rule.path] = found[0]
        if found is None or found[0] in SPECIAL:
            continue
        real = found[0]
        if real != os.path.normpath(rule.path):
            links.update(links_on_the_way(rule.path))
        cur = merged.setdefault(real, [False, False, found[1], False])
        cur[0] |= rule.write
        cur[1] |= rule.exec
        cur[3] |= rule.cow
    keyed: list[tuple[tuple[str, ...], int, Step]] = [
        (_parts("/tmp"), 1, Step("tmp", "/tmp", exec=tmp_exec)),
        (_parts("/proc"), 1, Step("proc", "/proc")),
        (_parts("/dev"), 1, Step("dev", "/dev")),
    ]
    output = _output_step(plan, merged)
    for real, (write, exe, how) in _effective(merged).items():
        if output is not None and _under(real, output.path):
            continue   # the output is a fresh tmpfs: nothing of the host's is bound in it
        attrs = ATTR_NOSUID
        attrs |= 0 if _under(real, "/dev") else ATTR_NODEV
        attrs |= 0 if exe else ATTR_NOEXEC
        attrs |= 0 if write else ATTR_RDONLY
        keyed.append((_parts(real), 0, Step(how, real, real, merged[real][2], attrs)))
    for where, text in links.items():
        keyed.append((_parts(where), 2, Step("link", where, text, False)))
    if output is not None:
        keyed.append((_parts(output.path), 0, output))
    keyed.sort(key=lambda k: (k[0], k[1]))
    steps = [k[2] for k in keyed]
    masked: set[str] = set()
    for mask in plan.masks:
        found = resolve(mask)
        # Masks naming the same file (a symlink and its target) are applied once: a
        # second bind of the mask file would stack on the first for nothing.
        if output is not None and found is not None and _under(found[0], output.path):
            continue   # nothing of the host's is inside the output tmpfs to hide
        if found is not None and found[0] not in masked:
            masked.add(found[0])
            steps.append(Step("mask", found[0], is_dir=found[1]))
    return steps


def _output_step(plan: FsPlan, merged: dict[str, list[bool]]) -> Step | None:
    """${OUTPUT} as a size-limited tmpfs, when the view holds it at all.

    Its rights are the union of the rules at or above it (as for a bind);
    rules beneath it bind nothing (the host directory is new and empty).
    The monitor copies it out, inert, when the run ends (`copy_out`).
    """
    found = resolve(plan.output) if plan.output else None
    if found is None or not found[1]:
        return None
    real = found[0]
    cut = next((s for s in SPECIAL if _under(real, s)), None)
    covering = [r for r in merged if _under(real, r) and (cut is None or _under(r, cut))]
    if not covering or real in SPECIAL:
        return None
    write = any(merged[r][0] for r in covering)
    exe = any(merged[r][1] for r in covering)
    attrs = ATTR_NOSUID | ATTR_NODEV | (0 if exe else ATTR_NOEXEC) | (0 if write else ATTR_RDONLY)
    return Step("output", real, is_dir=True, attrs=attrs)


def _fail(what: str, path: str, exc: OSError) -> SetupError:
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return SetupError("mounts", f"{what} {path}: {os.strerror(exc.errno or 0)} ({code})")


def _setattr(target: str, attrs: int, recursive: bool) -> None:
    """Add `attrs` to the mount at `target` (and to its submounts when recursive)."""
    global _have_setattr
    if _have_setattr:
        flags = libc.AT_SYMLINK_NOFOLLOW | (libc.AT_RECURSIVE if recursive else 0)
        try:
            libc.mount_setattr(target, attrs, flags)
            return
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
        _have_setattr = False
    for mnt in (_submounts(target) if recursive else [target]):
        _remount(mnt, attrs)


def _setattr_fd(fd: int, attrs: int, recursive: bool, target: str) -> None:
    """`_setattr` on the mount descriptor `fd` is at (opened beneath the view)."""
    if _have_setattr:
        try:
            libc.mount_setattr("", attrs, libc.AT_EMPTY_PATH
                               | (libc.AT_RECURSIVE if recursive else 0), dirfd=fd)
            return
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
    _setattr(target, attrs, recursive)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _bind(src: int, dst: int, attrs: int, recursive: bool, target: str) -> None:
    """Bind the object of descriptor `src` onto that of `dst` (beneath.py: both opened
    without following a symlink), `attrs` set on the copy before it is attached."""
    global _have_setattr
    rec = libc.AT_RECURSIVE if recursive else 0
    if _have_setattr:
        try:
            tree = libc.open_tree(src, "", libc.OPEN_TREE_CLONE | libc.AT_EMPTY_PATH
                                  | os.O_CLOEXEC | rec)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _have_setattr = False
        else:
            try:
                libc.mount_setattr("", attrs, libc.AT_EMPTY_PATH | rec, dirfd=tree)
                libc.move_mount(tree, dst)
                return
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                _have_setattr = False
            finally:
                os.close(tree)
    # Before 5.12: mount(2) through the descriptors' magic links, then remounts.
    libc.mount(_fd_path(src), _fd_path(dst), None,
               libc.MS_BIND | (libc.MS_REC if recursive else 0))
    _setattr(target, attrs, recursive)


def _submounts(target: str) -> list[str]:
    """`target` and every mount beneath it, parents first (fallback path only)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            where = line.split()[4].encode().decode("unicode_escape")
            if _under(where, target):
                out.append(where)
    return sorted(out, key=_parts)


def _remount(target: str, attrs: int) -> None:
    """Fallback: MS_REMOUNT|MS_BIND keeping the (possibly locked) flags the mount has."""
    flags = libc.MS_REMOUNT | libc.MS_BIND
    flags |= (libc.MS_RDONLY if attrs & ATTR_RDONLY else 0)
    flags |= (libc.MS_NOSUID if attrs & ATTR_NOSUID else 0)
    flags |= (libc.MS_NODEV if attrs & ATTR_NODEV else 0)
    flags |= (libc.MS_NOEXEC if attrs & ATTR_NOEXEC else 0)
    have = os.statvfs(target).f_flag
    for st_bit, ms_bit in _ST_TO_MS:
        if have & st_bit:
            flags |= ms_bit
    if have & _ST_RELATIME:
        flags |= _MS_RELATIME
    elif not have & _ST_NOATIME:
        flags |= _MS_STRICTATIME
    libc.mount(None, target, None, flags)


def _mount_fresh(root_fd: int, path: str, fstype: str, flags: int, data: str | None = None) -> None:
    """A new filesystem of the sandbox's own (tmpfs, proc) at `path` in the view, its
    mountpoint made and reached beneath `root_fd` (a workdir "/" rule binds the
    host's root at the top of the view first)."""
    dst = beneath.make_mountpoint(root_fd, path, True)
    try:
        libc.mount(fstype, _fd_path(dst), fstype, flags, data)
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
    its usual name, so ttyname(3) finds it; nothing else of the host's /dev/pts."""
    if not tty.startswith("/dev/pts/") or "/" in tty[len("/dev/pts/"):]:
        return
    os.makedirs(dev + "/pts", 0o755, exist_ok=True)
    target = dev + tty[len("/dev"):]
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
    sysview.make_pts_points(dev, tty)
    _setattr(dev, ATTR_RDONLY | ATTR_NOSUID | ATTR_NOEXEC, True)
    libc.mount("tmpfs", dev + "/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
               f"mode=1777,size={shm_size}")
    sysview.private_pts(dev, tty)


def _mount_output(root_fd: int, step: Step, plan: FsPlan) -> int:
    """The output tmpfs; returns a descriptor of its root for the monitor's copy-out."""
    flags = 0
    for attr, ms in ((ATTR_NOSUID, libc.MS_NOSUID), (ATTR_NODEV, libc.MS_NODEV),
                     (ATTR_NOEXEC, libc.MS_NOEXEC), (ATTR_RDONLY, libc.MS_RDONLY)):
        flags |= ms if step.attrs & attr else 0
    dst = beneath.make_mountpoint(root_fd, step.path, True)
    try:
        libc.mount("tmpfs", _fd_path(dst), "tmpfs", flags,
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
            os.symlink(_fd_path(src), "lower", dir_fd=layer)
            os.mkdir("upper", 0o700, dir_fd=layer)
            os.chmod("upper", stat.S_IMODE(os.fstat(src).st_mode), dir_fd=layer)
            os.mkdir("work", 0o700, dir_fd=layer)
            dst = beneath.make_mountpoint(root_fd, step.path, True)
            fds.callback(os.close, dst)
            here = os.open(".", os.O_PATH | os.O_CLOEXEC)
            fds.callback(os.close, here)
            os.fchdir(layer)
            fds.callback(os.fchdir, here)
            libc.mount("overlay", _fd_path(dst), "overlay", libc.MS_NOSUID | libc.MS_NODEV,
                       "lowerdir=lower,upperdir=upper,workdir=work,userxattr,xino=off")
        top = beneath.open_in_view(root_fd, step.path)
        try:
            _setattr_fd(top, step.attrs, True, step.path)
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
            _bind(src, dst, step.attrs, True, target)
        beside = os.path.dirname(root)   # the scratch tmpfs the root lives in (scratch_at)
        if step.kind == "bind" and _under(beside, step.source):
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
            libc.mount("tmpfs", _fd_path(dst), "tmpfs", ro, "mode=000,size=4k,nr_inodes=1")
            return
        if not mask_file:
            # Beside the view, not in it: when a rule binds a read-only tree at the
            # view's top (workdir "/"), the view has no room left for a new file.
            mask_file.append(os.path.join(os.path.dirname(root), "mask"))
            os.mknod(mask_file[0], stat.S_IFREG)
        src = os.open(mask_file[0], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _bind(src, dst, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC, False,
                  root + step.path)
        finally:
            os.close(src)
    finally:
        os.close(dst)


def prepare(plan: FsPlan) -> Prepared:
    """Compute the table ahead of the fork (e.g. in a warm monitor), for the context's
    `mount_table`: the one way it crosses the fork (issue 14: no module state does).

    In a freshly forked process every Python object touched costs a page
    copy, so the ~0.1 ms the table takes in a warm process becomes ~0.5 ms
    in the sandboxee. `build_view` uses a prepared table when the plan is equal.
    """
    real: dict[str, str] = {}
    return Prepared(plan, mount_table(plan, real), real)


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
            _setattr(root, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC, False)
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
                          lambda target: _setattr(target, ro, False),
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
