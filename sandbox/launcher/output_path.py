"""Where a run's products go on the host: opened safely, private to the caller.

The launcher writes into paths the caller names (``--output``, ``--result``,
``--audit-log``) and into its own state directory, possibly as root. Each of
them is reached by a walk from ``/``, one component at a time, never through
a name someone else controls:

- every directory on the way must be owned by the caller or root, and not
  writable by group or others unless it has the sticky bit (``/tmp``): in any
  other directory another local user could rename or plant a component;
- a symlink on the way is followed only when it is owned by the caller or
  root (what the kernel's ``protected_symlinks`` does in sticky directories);
  the last component is never followed (``O_NOFOLLOW``): a link planted at a
  predictable ``--output`` path must not redirect root's writes;
- missing directories are created ``0700`` by ``mkdir`` itself (no window
  between creation and a chmod), never at the top level on the way (a
  ``HOME=/nonexistent`` must not become a directory), and the output
  directory ends up ``0700``;
- ``--output`` must be a new or empty directory, never ``/``, the caller's
  home or an FHS system directory, so a program can never add names to
  ``/etc`` or ``/usr``.

Refusals raise `OutputPathError`, an `InputError`: the API raises it before
anything runs, and ``sandbox exec``/``run`` exit 125 with its one line.
"""
from __future__ import annotations

import errno
import os
import pwd
import stat

from sandbox.errors import OutputPathError

SYSTEM_DIRS = ("/", "/etc", "/usr", "/var", "/boot", "/bin", "/sbin", "/root", "/proc", "/sys",
               "/dev", "/run", "/opt", "/srv", "/home", "/mnt", "/media", "/tmp", "/var/tmp")
PSEUDO_FS = ("/proc", "/sys", "/dev")   # nothing beneath them is a place for files
_MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _home_dirs() -> set[str]:
    homes = {os.path.expanduser("~")}
    try:
        homes.add(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        pass
    return {os.path.normpath(h) for h in homes if h and h != "~"}


def _system(path: str) -> str | None:
    """Why `path` (absolute, normalised) may never be an output directory, or None."""
    top = "/" + path.split("/")[1] if path != "/" else "/"
    if path in SYSTEM_DIRS or (path == top and top.startswith("/lib")):
        return "a system directory"
    if any(path == p or path.startswith(p + "/") for p in PSEUDO_FS):
        return f"inside {top}, a kernel filesystem"
    if path in _home_dirs():
        return "your home directory"
    return None


def _check_dir(st: os.stat_result, where: str, what: str) -> None:
    uid = os.geteuid()
    if st.st_uid not in (uid, 0):
        raise OutputPathError(f"{what}: {where} is owned by uid {st.st_uid}, not by you "
                              f"({uid}) or root: another user could swap what it holds")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise OutputPathError(f"{what}: {where} is writable by other users "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}, no sticky bit): "
                              "another user could plant a link there")


def _components(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class _Walk:
    """An O_PATH descriptor walk from ``/`` that keeps the real path in step."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.real: list[str] = []
        self.hops = 0

    @property
    def where(self) -> str:
        return "/" + "/".join(self.real)

    def restart(self) -> None:
        os.close(self.fd)
        self.fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.real = []

    def close(self) -> None:
        os.close(self.fd)

    def step(self, name: str, create: bool) -> list[str]:
        """Enter `name` (a directory); returns link components to walk first, if any."""
        if name == "..":
            if self.real:
                self.real.pop()
            self._reopen()
            return []
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            if not create:
                raise OutputPathError(f"{self.what}: {os.path.join(self.where, name)} "
                                      "does not exist") from None
            if not self.real:   # e.g. HOME=/nonexistent of a system user
                raise OutputPathError(f"{self.what}: /{name} does not exist, and a new "
                                      "top-level directory is never made on the way "
                                      "(set SANDBOX_HOME, or give an existing place)") from None
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
            except FileExistsError:
                pass   # made meanwhile: the open below checks what it is
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        st = os.fstat(fd)
        here = os.path.join(self.where, name)
        if stat.S_ISLNK(st.st_mode):
            os.close(fd)
            if st.st_uid not in (os.geteuid(), 0):
                raise OutputPathError(f"{self.what}: {here} is a symlink owned by uid "
                                      f"{st.st_uid}: not followed")
            self.hops += 1
            if self.hops > _MAX_LINKS:
                raise OutputPathError(f"{self.what}: too many symlinks at {here}")
            text = os.readlink(name, dir_fd=self.fd)
            if text.startswith("/"):
                self.restart()
            return _components(text)
        if not stat.S_ISDIR(st.st_mode):
            os.close(fd)
            raise OutputPathError(f"{self.what}: {here} is not a directory")
        _check_dir(st, here, self.what)
        os.close(self.fd)
        self.fd = fd
        self.real.append(name)
        return []

    def _reopen(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def walk(self, parts: list[str], create: bool) -> None:
        todo = list(parts)
        while todo:
            todo[:0] = self.step(todo.pop(0), create)


def private_dir(path: str, *, what: str = "--output", empty: bool = True,
                system_check: bool = True) -> str:
    """Open or create `path` as a directory only the caller can reach; its real path.

    `empty`: it must be new or empty (a run's output). The directory itself is
    never reached through a symlink, must be owned by the caller, and is left
    mode 0700 (a fresh one is created so; an existing one only loses bits).
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise OutputPathError(f"{what}: not a usable path: {path!r}")
    path = os.path.abspath(path)
    if system_check and (why := _system(path)):
        raise OutputPathError(f"{what}: {path} is {why}; give a new or empty directory "
                              "of your own")
    parts = _components(path)
    walk = _Walk(what)
    try:
        walk.walk(parts[:-1], create=True)
        parent, name = walk.fd, parts[-1] if parts else ""
        if not name:
            raise OutputPathError(f"{what}: {path} is a system directory")
        created = False
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
            created = True
        except FileExistsError:
            pass
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputPathError(f"{what}: {path} is a symlink; it is never followed "
                                      "(give the real directory)") from None
            if exc.errno == errno.ENOTDIR:
                raise OutputPathError(f"{what}: {path} is not a directory") from None
            raise OutputPathError(f"{what}: {path}: {exc.strerror}") from None
        try:
            real = os.path.join(walk.where, name)
            st = os.fstat(fd)
            if system_check and (why := _system(real)):
                raise OutputPathError(f"{what}: {path} is {real}, {why}")
            if st.st_uid != os.geteuid():
                raise OutputPathError(f"{what}: {path} is owned by uid {st.st_uid}, "
                                      f"not by you ({os.geteuid()})")
            if empty and not created and os.listdir(fd):
                raise OutputPathError(f"{what}: {path} is not empty; give a new or empty "
                                      "directory (the run's products must not mix with "
                                      "what is there)")
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)   # only removes access (or restores the owner's)
            return real
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputPathError(f"{what}: {path}: {exc.strerror or exc}") from None
    finally:
        walk.close()


def private_file(path: str, *, what: str, keep: bool = False,
                 open_existing: bool = True) -> int | None:
    """Create `path` (or check it) as a regular file of the caller's, mode 0600.

    The directory holding it passes the same checks as an output's parents;
    the file is opened with O_NOFOLLOW and must be a regular, singly linked
    file of the caller's. `keep`: return that descriptor (O_WRONLY, close-on-exec)
    to write the file later through it, never by name again: a run granted
    write on a directory on the way (another user cannot, the checks say so;
    a sandbox runs as the caller) may rename it and plant a link there while it
    runs (`tests/test_path_swaps.py`).
    `open_existing=False`: a file already there is checked by lstat and never opened
    (only a file this call creates is): closing any descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's included (the run history's
    connections: tests/test_history_locks.py).
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise OutputPathError(f"{what}: not a usable path: {path!r}")
    path = os.path.abspath(path)
    parts = _components(path)
    if not parts:
        raise OutputPathError(f"{what}: {path} is a directory")
    walk = _Walk(what)
    try:
        walk.walk(parts[:-1], create=False)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(parts[-1], flags | (0 if open_existing else os.O_EXCL), 0o600,
                         dir_fd=walk.fd)
        except OSError as exc:
            if exc.errno == errno.EEXIST and not open_existing:
                there = os.stat(parts[-1], dir_fd=walk.fd, follow_symlinks=False)
                if not stat.S_ISLNK(there.st_mode):
                    _check_private(there, what, path)
                    if stat.S_IMODE(there.st_mode) & 0o077:
                        # by name: the directory is the caller's alone (checked above)
                        os.chmod(parts[-1], 0o600, dir_fd=walk.fd)
                    return None
            if exc.errno in (errno.ELOOP, errno.EEXIST):
                raise OutputPathError(f"{what}: {path} is a symlink; it is never "
                                      "followed") from None
            raise OutputPathError(f"{what}: {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            _check_private(st, what, path)
            if stat.S_IMODE(st.st_mode) & 0o077:
                os.fchmod(fd, 0o600)
            if keep:
                os.set_blocking(fd, True)
                kept, fd = fd, -1
                return kept
            return None
        finally:
            if fd >= 0:
                os.close(fd)
    except OSError as exc:
        raise OutputPathError(f"{what}: {path}: {exc.strerror or exc}") from None
    finally:
        walk.close()


def _check_private(st: os.stat_result, what: str, path: str) -> None:
    """A regular, singly linked file of the caller's, or OutputPathError."""
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
        raise OutputPathError(f"{what}: {path} exists and is not a regular file of "
                              "yours with a single link")
