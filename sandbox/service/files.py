"""A run's files on the server: input names that cannot leave the input directory,
inputs written without following links, outputs listed and opened the same way.

The output directory is the copy-out of the run's ${OUTPUT} tmpfs (inert
files), but it is still the child's product: every open here walks it with
O_NOFOLLOW component by component, so a link it planted is never followed.

What a listing makes its reader pay is bounded by what the run could allocate:
a second name of a file (a hard link; the copy-out keeps them) is listed as a
`link` to the first, never as another file to fetch, and each file says how many
bytes it holds (`allocated`) next to its apparent `size` (holes read as zeros).
Before, 81 names of a strict run with 58 MiB of data listed 4.79 GiB, and a
client fetching them filled its disk. Names are any bytes the run chose: each is
listed as text (undecodable bytes as `\\xNN`) and as `href`, its bytes
percent-encoded, which is how the download addresses it exactly.
"""
from __future__ import annotations

import os
import stat
import urllib.parse
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
        if len(os.fsencode(part)) > 255:
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
    write_extents(root, name, [(0, data)], len(data), executable)


def write_extents(root: str, name: str, extents: list[tuple[int, bytes]], size: int,
                  executable: bool = False) -> None:
    """Write one file under `root` from its data extents ((offset, bytes), in order),
    `size` bytes long: what lies between them stays a hole."""
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
            for offset, data in extents:
                os.lseek(fd, offset, os.SEEK_SET)
                write_all(fd, data)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def link_input(root: str, name: str, target: str) -> None:
    """Make root/name another name of the regular file root/target (neither followed
    through a link)."""
    new, old = check_input_name(name).split("/"), check_input_name(target).split("/")
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dfd = _open_dir(root_fd, new[:-1], create=True)
        try:
            tfd = _open_dir(root_fd, old[:-1], create=False)
        except BaseException:
            os.close(dfd)
            raise
    finally:
        os.close(root_fd)
    try:
        st = os.stat(old[-1], dir_fd=tfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{target!r} is not a regular file")
        os.link(old[-1], new[-1], src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
    finally:
        os.close(tfd)
        os.close(dfd)


@dataclass(frozen=True)
class OutFile:
    path: str           # the name as text: undecodable bytes shown as \\xNN
    size: int           # apparent size (a hole reads as zeros)
    kind: str           # "file", "link" (another name of `target`), "dir", "symlink", "other"
    href: str           # the name's bytes percent-encoded: the download path
    allocated: int = 0  # bytes the file holds on disk
    target: str | None = None   # for a link: the href of the file's first name


def text(name: str) -> str:
    """A name read from the disk (surrogate-escaped bytes) as JSON-safe text."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def href(name: str) -> str:
    return urllib.parse.quote(os.fsencode(name), safe="/")


def from_href(ref: str | bytes) -> str:
    """The exact name an `href` stands for (surrogate-escaped bytes where not UTF-8)."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(ref))


def name_of(raw_path: bytes | None, marker: bytes, fallback: str) -> str:
    """The file name a request addressed: what follows `marker` in the request's raw
    (still percent-encoded) path, decoded to the name's exact bytes. The framework's
    decoded path parameter replaces bytes that are not UTF-8, so it cannot name
    every file a run may write."""
    if raw_path and marker in raw_path:
        return from_href(raw_path.split(marker, 1)[1])
    return fallback


def list_outputs(root: str, limit: int = 10000) -> list[OutFile]:
    """Every entry under `root`, never descending through a link."""
    out: list[OutFile] = []
    first: dict[tuple[int, int], str] = {}      # (dev, ino) -> the first name listed
    if not os.path.isdir(root) or os.path.islink(root):
        return out

    def walk(dfd: int, prefix: str, depth: int) -> None:
        for name in sorted(os.listdir(dfd)):
            if len(out) >= limit:
                return
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            rel = f"{prefix}{name}"
            shown, ref = text(rel), href(rel)
            if stat.S_ISDIR(st.st_mode):
                out.append(OutFile(shown, 0, "dir", ref))
                if depth < 64:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=dfd)
                    try:
                        walk(sub, rel + "/", depth + 1)
                    finally:
                        os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in first:
                    out.append(OutFile(shown, 0, "link", ref, target=first[key]))
                    continue
                if st.st_nlink > 1:
                    first[key] = ref
                out.append(OutFile(shown, st.st_size, "file", ref,
                                   allocated=min(st.st_size, st.st_blocks * 512)))
            elif stat.S_ISLNK(st.st_mode):
                out.append(OutFile(shown, 0, "symlink", ref))
            else:
                out.append(OutFile(shown, 0, "other", ref))

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
