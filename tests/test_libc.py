"""One module makes raw system calls (sandbox/isolation/libc.py), by name.

The source check parses every module of the package (ast), so a comment or a
string that mentions ``ctypes.CDLL`` or ``SYS_openat2 = 437`` neither trips
it nor hides a real call; `test_checker_*` prove both directions.
"""
from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pytest

from sandbox.isolation import libc
from sandbox.isolation.syscall_table import X86_64

PACKAGE = Path(__file__).resolve().parent.parent / "sandbox"
THE_MODULE = PACKAGE / "isolation" / "libc.py"
TABLES = {PACKAGE / "isolation" / "syscall_table.py", PACKAGE / "isolation" / "syscall_profiles.py"}
# The project's own libraries, not libc: the audit's compiled fast path
# (sandbox/_native/notify_fast.c) and the compiled stub (stub_fork.c). Each loader may
# open its library, and only it (test_a_loader_opens_only_its_own_library); the stub's
# with PyDLL (the GIL held: PID 1 returns through that call, as from os.fork()).
NATIVE = {PACKAGE / "monitor" / "notify_fast.py": ("CDLL", "libnotify_fast.so"),
          PACKAGE / "sandboxee" / "stub_fork.py": ("PyDLL", "libstub_fork.so")}
LOADERS = {"CDLL", "PyDLL", "cdll", "pydll", "LoadLibrary", "LibraryLoader", "dlopen"}


def offences(source: str, name: str = "<src>") -> list[str]:
    """Each place in `source` that opens a C library or numbers a syscall itself."""
    out = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and node.attr in LOADERS:
            out.append(f"{where}: opens a C library ({node.attr})")
        elif isinstance(node, ast.Name) and node.id in LOADERS:
            out.append(f"{where}: opens a C library ({node.id})")
        elif isinstance(node, ast.ImportFrom) and node.module in ("ctypes", "_ctypes") \
                and any(a.name in LOADERS for a in node.names):
            out.append(f"{where}: imports a C library loader")
        elif isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            first = node.args[0] if node.args else None
            if called == "syscall" and not (isinstance(first, ast.Constant)
                                            and isinstance(first.value, str)):
                out.append(f"{where}: syscall() with a number, not a name")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            if any(n.startswith(("SYS_", "NR_", "__NR_")) for n in names):
                out.append(f"{where}: syscall number constant {names}")
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if (isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                        and isinstance(v.value, int) and not isinstance(v.value, bool)
                        and v.value > 3                # 0..3 (read..close): enum-like
                        and X86_64.get(k.value) == v.value):      # type: ignore[arg-type]
                    out.append(f"{where}: syscall number of {k.value!r} in a table")
    return out


def test_no_module_but_libc_opens_libc_or_numbers_a_syscall() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == THE_MODULE or path in TABLES:
            continue
        if path in NATIVE:
            loader = NATIVE[path][0]
            found += [o for o in offences(path.read_text(), str(path.relative_to(PACKAGE.parent)))
                      if f"opens a C library ({loader})" not in o]
            continue
        found += offences(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    assert found == []


def test_the_module_itself_holds_the_one_handle() -> None:
    hits = [o for o in offences(THE_MODULE.read_text()) if "opens a C library" in o]
    assert len(hits) == 1


@pytest.mark.parametrize("path", sorted(NATIVE), ids=lambda p: p.name)
def test_a_loader_opens_only_its_own_library(path: Path) -> None:
    import importlib
    loader, name = NATIVE[path]
    tree = ast.parse(path.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr in LOADERS]
    assert len(calls) == 1 and calls[0].func.attr == loader  # type: ignore[attr-defined]
    arg = calls[0].args[0]
    assert isinstance(arg, ast.Name) and arg.id == "LIB_PATH"
    module = importlib.import_module(
        "sandbox." + str(path.relative_to(PACKAGE).with_suffix("")).replace("/", "."))
    assert module.LIB_PATH.endswith(f"/sandbox/_native/{name}")


def test_checker_sees_code_not_comments() -> None:
    quiet = ('# _libc = ctypes.CDLL(None)\n"""SYS_openat2 = 437; ctypes.CDLL(None)"""\n'
             'x = "syscall(437)"\nlibc.syscall("openat2", 1)\n')
    assert offences(quiet) == []
    loud = ("import ctypes\nh = ctypes.CDLL(None)\n"
            "from ctypes import CDLL\n"
            "SYS_renameat2 = 316\n"
            "h.syscall(ctypes.c_long(437))\n"
            "NRS = {'openat2': 437}\n")
    kinds = offences(loud)
    assert len(kinds) == 5, kinds


def test_numbers_come_from_the_running_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    assert libc.syscall_number("openat2") == X86_64["openat2"] == 437
    monkeypatch.setattr(libc, "ARCH", "riscv64")
    with pytest.raises(OSError) as exc:
        libc.syscall_number("openat2")
    assert exc.value.errno == errno.ENOSYS and "riscv64" in str(exc.value)


def test_unknown_syscall_is_enosys_not_a_call() -> None:
    with pytest.raises(OSError) as exc:
        libc.syscall("no_such_call", 0)
    assert exc.value.errno == errno.ENOSYS


def test_wrappers_raise_oserror_with_the_errno(tmp_path: Path) -> None:
    with pytest.raises(OSError) as exc:
        libc.openat2(libc.AT_FDCWD, str(tmp_path / "missing"), os.O_RDONLY)
    assert exc.value.errno == errno.ENOENT and exc.value.filename == str(tmp_path / "missing")
    with pytest.raises(OSError) as exc:
        libc.renameat2(libc.AT_FDCWD, str(tmp_path / "a"), libc.AT_FDCWD,
                       str(tmp_path / "b"), 1)
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(OSError) as exc:
        libc.syscall("pidfd_getfd", -1, 0, 0)
    assert exc.value.errno == errno.EBADF
    with pytest.raises(OSError) as exc:
        libc.setns(-1, 0)
    assert exc.value.errno == errno.EBADF
    with pytest.raises(OSError) as exc:
        libc.statx_mnt_id(-1)
    assert exc.value.errno == errno.EBADF
    assert libc.faccessat(libc.AT_FDCWD, str(tmp_path / "missing"), os.R_OK, 0) \
        == errno.ENOENT


def test_openat2_resolves_in_root(tmp_path: Path) -> None:
    """The resolver's call: an absolute symlink stays inside the root it is resolved in."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("inside")
    os.symlink("/etc/passwd", tmp_path / "link")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = libc.openat2(root, "link", os.O_RDONLY, 0,
                          libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
        try:
            assert os.read(fd, 100) == b"inside"
        finally:
            os.close(fd)
    finally:
        os.close(root)


def test_pidfd_getfd_duplicates_an_open_file() -> None:
    r, w = os.pipe()
    try:
        dup = libc.pidfd_getfd(os.getpid(), w)
        try:
            os.write(dup, b"x")
            assert os.read(r, 1) == b"x"
        finally:
            os.close(dup)
    finally:
        os.close(r)
        os.close(w)
