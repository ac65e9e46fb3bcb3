"""A run's files on the server: input names that cannot leave the input directory,
inputs written without following links, outputs listed and opened the same way.

The output directory is the copy-out of the run's ${OUTPUT} tmpfs (inert
files), but it is still the child's product: every open here walks it with
O_NOFOLLOW component by component, so a link it planted is never followed.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

MAX_DEPTH = 16


def check_input_name(name: str) -> str:
    """`name` if it is a safe relative path, else ValueError saying why."""
    if "\0" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a file name may not hold NUL or control characters")
    if name.startswith("/"):
        raise ValueError("a file name must be relative to the input directory")
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise ValueError(f"a file name may have at most {MAX_DEPTH} levels")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"{name!r}: empty, '.' and '..' segments are not allowed")
        if len(part.encode()) > 255:
            raise ValueError("a file name segment is longer than 255 bytes")
    return name


def _open_dir(root_fd: int, parts: list[str], create: bool) -> int:
    """An fd on root/parts..., each level opened without following a link."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_input(root: str, name: str, data: bytes, executable: bool = False) -> None:
    """Write one input file under `root` (a directory the service made)."""
    parts = check_input_name(name).split("/")
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dfd = _open_dir(root_fd, parts[:-1], create=True)
    finally:
        os.close(root_fd)
    try:
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o500 if executable else 0o400, dir_fd=dfd)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class OutFile:
    path: str
    size: int
    kind: str   # "file", "dir", "symlink", "other"


def list_outputs(root: str, limit: int = 10000) -> list[OutFile]:
    """Every entry under `root`, never descending through a link."""
    out: list[OutFile] = []
    if not os.path.isdir(root) or os.path.islink(root):
        return out

    def walk(dfd: int, prefix: str, depth: int) -> None:
        for name in sorted(os.listdir(dfd)):
            if len(out) >= limit:
                return
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            rel = f"{prefix}{name}"
            if stat.S_ISDIR(st.st_mode):
                out.append(OutFile(rel, 0, "dir"))
                if depth < 64:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=dfd)
                    try:
                        walk(sub, rel + "/", depth + 1)
                    finally:
                        os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                out.append(OutFile(rel, st.st_size, "file"))
            elif stat.S_ISLNK(st.st_mode):
                out.append(OutFile(rel, 0, "symlink"))
            else:
                out.append(OutFile(rel, 0, "other"))

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        walk(fd, "", 0)
    finally:
        os.close(fd)
    return out


def open_output(root: str, rel: str) -> tuple[int, int]:
    """(fd, size) of the regular file root/rel, opened without following any link;
    FileNotFoundError for anything else (a link, a directory, a name that leaves)."""
    try:
        parts = check_input_name(rel).split("/")
    except ValueError:
        raise FileNotFoundError(rel) from None
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise FileNotFoundError(rel) from None
    try:
        dfd = _open_dir(root_fd, parts[:-1], create=False)
    except OSError:
        raise FileNotFoundError(rel) from None
    finally:
        os.close(root_fd)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dfd)
    except OSError:
        raise FileNotFoundError(rel) from None
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileNotFoundError(rel)
    return fd, st.st_size
