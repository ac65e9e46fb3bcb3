"""Handing a run's ${OUTPUT} back to the caller: bounded, inert, private.

In the view, ${OUTPUT} is a tmpfs of ``output_size`` bytes and
``output_inodes`` inodes (`sandbox.isolation.mounts`), so a program that
fills it gets ENOSPC and the pages are charged to the run's memory. PID 1
hands the monitor a descriptor of that tmpfs before the program starts; the
descriptor keeps it alive after the sandbox's mount namespace is gone, and
`copy_out` copies it into the caller's output directory once every process of
the sandbox has exited (nothing can change it any more).

What is handed back is inert, whatever the program left:

- only regular files, directories and symlinks are created (symlinks are
  copied as text, never followed); device nodes, fifos, sockets and anything
  else are dropped and counted;
- modes are the owner's only: files 0600 (0700 when the owner could execute
  them), directories 0700; setuid, setgid and sticky bits never survive;
- everything is created by the monitor, which runs as the caller, so the
  caller owns it (for a root caller, root), with O_EXCL and O_NOFOLLOW in a
  directory the launcher made private, itself opened by the kernel with no
  symlink on its path (`open_dest`: a parent swapped for a link while the run
  went on is an error, nothing is copied);
- hard links stay hard links, holes stay holes, and at most ``max_bytes`` of
  disk and ``max_entries`` names are written (a tree of hard links cannot
  multiply the disk used), ``max_depth`` levels deep. Disk, not data: each
  file's data is counted in whole blocks, and each directory and long symlink
  as the block a host filesystem gives it (on the tmpfs they cost nothing, so
  a tree of empty directories left 151 MB on ext4 for a 128 MiB output).

Without a mount namespace (``best_effort``) the program wrote to the host
directory itself; `sanitize` then applies the same rules in place.
"""
from __future__ import annotations

import errno
import os
import stat

from sandbox.isolation import beneath
from sandbox.isolation.libc import AT_FDCWD
from sandbox.protocol import OutputSummary as OutputReport

MAX_DEPTH = 64
_RD = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIR = _RD | os.O_DIRECTORY
_CHUNK = 1 << 20
BLOCK = 4096          # what a host filesystem (ext4, xfs) gives a directory or a data block
INLINE_LINK = 60      # ext4 keeps a shorter symlink's target in its inode
OPAQUE = "user.overlay.opaque"   # overlayfs with userxattr (the only form in a user namespace)


def _drop(rep: OutputReport, why: str) -> None:
    rep.dropped += 1
    rep.dropped_by[why] = rep.dropped_by.get(why, 0) + 1


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device")):
        if test(mode):
            return name
    return "other"


def file_mode(mode: int) -> int:
    """The owner's bits only, readable and writable by the owner, never set-id."""
    return 0o600 | (0o100 if mode & 0o111 else 0)


class _Copier:
    def __init__(self, max_bytes: int, max_entries: int, max_depth: int,
                 deleted: list[str] | None = None) -> None:
        self.rep = OutputReport()
        # An overlay's upper layer (workdir_export): whiteouts (0/0 character devices)
        # and opaque directories are deletions, listed here instead of copied or dropped.
        self.deleted = deleted
        self.max_bytes, self.max_entries, self.max_depth = max_bytes, max_entries, max_depth
        self.entries = 0
        self.disk = 0          # bytes the copy takes on the host (BLOCK-rounded), max_bytes
        self.links: dict[tuple[int, int], str] = {}   # (dev, ino) -> dest path, relative
        self.root = -1

    def _budget(self, disk: int = 0) -> bool:
        """Room for one more name taking `disk` bytes of the host's disk."""
        if self.entries >= self.max_entries or self.disk + disk > self.max_bytes:
            _drop(self.rep, "over_budget")
            return False
        self.entries += 1
        self.disk += disk
        return True

    def tree(self, sfd: int, dfd: int, rel: str, depth: int) -> None:
        with os.scandir(sfd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            try:
                self.entry(sfd, dfd, name, os.path.join(rel, name), depth)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                _drop(self.rep, "unreadable")

    def entry(self, sfd: int, dfd: int, name: str, rel: str, depth: int) -> None:
        st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        if self.deleted is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            if self._budget():
                self.deleted.append(rel)
            return
        if st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
            self.rep.setid_stripped += 1
        if stat.S_ISDIR(st.st_mode):
            if depth >= self.max_depth:
                _drop(self.rep, "too_deep")
                return
            if not self._budget(BLOCK):
                return
            os.mkdir(name, 0o700, dir_fd=dfd)
            self.rep.dirs += 1
            sub_s = _open(name, _DIR, sfd, 0o700)
            try:
                if self.deleted is not None and _opaque(sub_s):
                    self.deleted.append(rel + "/")
                sub_d = os.open(name, _DIR, dir_fd=dfd)
                try:
                    self.tree(sub_s, sub_d, rel, depth + 1)
                    os.utime(sub_d, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(sub_d)
            finally:
                os.close(sub_s)
        elif stat.S_ISLNK(st.st_mode):
            if self._budget(BLOCK if st.st_size >= INLINE_LINK else 0):
                os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
                self.rep.symlinks += 1
        elif stat.S_ISREG(st.st_mode):
            self.regular(sfd, dfd, name, rel, st)
        else:
            _drop(self.rep, _kind(st.st_mode))

    def regular(self, sfd: int, dfd: int, name: str, rel: str, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            if self._budget():
                os.link(self.links[key], name, src_dir_fd=self.root, dst_dir_fd=dfd,
                        follow_symlinks=False)
                self.rep.files += 1
            return
        data = min(st.st_size, st.st_blocks * 512)   # holes stay holes
        if not self._budget(-(-data // BLOCK) * BLOCK):
            return
        src = _open(name, _RD, sfd, 0o600)
        try:
            got = os.fstat(src)
            if not stat.S_ISREG(got.st_mode) or (got.st_dev, got.st_ino) != key:
                _drop(self.rep, "changed")
                return
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, file_mode(st.st_mode), dir_fd=dfd)
            try:
                self.rep.bytes += _copy_data(src, dst, got.st_size)
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.rep.files += 1
        if st.st_nlink > 1:
            self.links[key] = rel


def _opaque(fd: int) -> bool:
    """Is this directory of an overlay's upper layer opaque (its lower content gone)?"""
    try:
        return os.getxattr(fd, OPAQUE) == b"y"
    except OSError:
        return False


def _open(name: str, flags: int, dir_fd: int, fix_mode: int) -> int:
    """Open a name of the tmpfs, giving its owner (the caller) access if it was removed."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, fix_mode, dir_fd=dir_fd)   # not a symlink: lstat said so
        return os.open(name, flags, dir_fd=dir_fd)


def _copy_data(src: int, dst: int, size: int) -> int:
    """Copy the data extents only (holes stay holes); returns the bytes written."""
    written, pos = 0, 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break   # only a hole is left
            raise
        end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        os.lseek(dst, start, os.SEEK_SET)
        while start < end:
            n = os.sendfile(dst, src, start, min(_CHUNK, end - start))
            if n <= 0:
                break
            start += n
            written += n
        pos = end
    os.ftruncate(dst, size)
    return written


def open_dest(dest: str, dir_fd: int = AT_FDCWD) -> int:
    """The caller's directory `dest` (the launcher's link-free real path, or a name
    beneath `dir_fd`), opened by the kernel without following any symlink: a
    program granted write above its output can rename a parent and plant a link
    while it runs, and the copy must then fail (ELOOP), never land where the link
    points (`tests/test_path_swaps.py`)."""
    return beneath.open_dir(dest, dir_fd)


def cannot_open(dest: str, exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.EXDEV):
        return (f"cannot open {dest}: a symlink is on its path now (swapped during the "
                "run?); nothing was copied")
    return f"cannot open {dest}: {exc.strerror}"


def copy_out(src_fd: int, dest: str, *, max_bytes: int, max_entries: int,
             max_depth: int = MAX_DEPTH, deleted: list[str] | None = None,
             dir_fd: int = AT_FDCWD) -> OutputReport:
    """Copy the tree under `src_fd` into the empty directory `dest` (see the module doc),
    a path resolved as `open_dest` does.

    `deleted`: the tree is an overlay's upper layer; its whiteouts and opaque
    directories are appended there (relative names, a directory's ending in "/")."""
    c = _Copier(max_bytes, max_entries, max_depth, deleted)
    try:
        dfd = open_dest(dest, dir_fd)
    except OSError as exc:
        c.rep.error = cannot_open(dest, exc)
        return c.rep
    try:
        if os.fstat(dfd).st_uid != os.geteuid():
            c.rep.error = f"{dest} is no longer the caller's"
            return c.rep
        c.root = dfd
        sfd = os.open(".", _DIR, dir_fd=src_fd)
        try:
            c.tree(sfd, dfd, "", 0)
        finally:
            os.close(sfd)
    except OSError as exc:
        c.rep.error = f"copying the output stopped: {exc.strerror or exc}"
    finally:
        os.close(dfd)
    return c.rep


def sanitize(dest: str, *, max_depth: int = MAX_DEPTH) -> OutputReport:
    """The same rules in place, for a run that wrote to the host directory directly."""
    rep = OutputReport()

    def tree(fd: int, depth: int) -> None:
        with os.scandir(fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    rep.symlinks += 1
                    continue
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) or (
                        stat.S_ISDIR(st.st_mode) and depth >= max_depth):
                    if stat.S_ISDIR(st.st_mode):
                        _remove_tree(fd, name)
                        _drop(rep, "too_deep")
                    else:
                        os.unlink(name, dir_fd=fd)
                        _drop(rep, _kind(st.st_mode))
                    continue
                if st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
                    rep.setid_stripped += 1
                p = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    if stat.S_ISDIR(st.st_mode):
                        os.chmod(f"/proc/self/fd/{p}", 0o700)
                        rep.dirs += 1
                        sub = os.open(name, _DIR, dir_fd=fd)
                        try:
                            tree(sub, depth + 1)
                        finally:
                            os.close(sub)
                    else:
                        os.chmod(f"/proc/self/fd/{p}", file_mode(st.st_mode))
                        rep.files += 1
                        rep.bytes += st.st_blocks * 512
                finally:
                    os.close(p)
            except OSError:
                _drop(rep, "unreadable")

    try:
        fd = open_dest(dest)
    except OSError as exc:
        rep.error = cannot_open(dest, exc)
        return rep
    try:
        os.fchmod(fd, 0o700)
        tree(fd, 0)
    except RecursionError:
        rep.error = "the output tree is too deep to sanitize"
    finally:
        os.close(fd)
    return rep


def _remove_tree(fd: int, name: str) -> None:
    sub = os.open(name, _DIR, dir_fd=fd)
    try:
        with os.scandir(sub) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in entries:
            if is_dir:
                _remove_tree(sub, child)
            else:
                os.unlink(child, dir_fd=sub)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=fd)
