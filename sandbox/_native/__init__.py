"""Compiled helpers of the sandbox (built at install by setup.py's `build_native`).

`sandbox-init` (init.c) is PID 1 of every sandbox: it reaps orphans, forwards
signals to the program and reports the program's real wait status. With
``--stub`` it is also the waiting half of the stub (sandbox.sandboxee.stub). It is a
static executable, opened by the sandboxee before the mount view exists and
started with execveat(2), so it depends on nothing the policy grants.

An install made before the init existed (an editable checkout whose venv was
not reinstalled) has no binary: the launcher then builds it once into the
state directory with the same compiler flags (`init_path`), rather than fail.
What only that build needs (hashlib, shutil, subprocess, tempfile) is imported
there: every monitor imports this module, and an exec'd monitor's imports are on the
path of every cold run (~3 ms of them, OpenSSL's start-up most of it).
"""
from __future__ import annotations

import os

from sandbox._native.toolchain import CFLAGS, client_build, init_cc
from sandbox.errors import SetupError

HERE = os.path.dirname(os.path.abspath(__file__))
INIT_PATH = os.path.join(HERE, "sandbox-init")
SOURCE = os.path.join(HERE, "init.c")
HEADERS = (os.path.join(HERE, "fds.h"),)   # included by init.c and stub_fork.c


def newest_source(source: str) -> float:
    """The mtime of `source` or of a header it includes, whichever is newer."""
    return max(os.stat(p).st_mtime for p in (source, *HEADERS))


def init_path() -> str:
    """Where the init binary is: the installed one, else one built now (in the launcher)."""
    if os.access(INIT_PATH, os.X_OK) and not _older_than_source(INIT_PATH):
        return INIT_PATH
    cc = init_cc(os.environ.get("CC", "cc"))
    try:
        digest = _digest(SOURCE, cc, CFLAGS)
    except OSError as exc:
        raise SetupError("init", f"the sandbox's init is not installed and its source "
                                 f"is missing ({exc.strerror}): reinstall the package") from None
    from sandbox.launcher.prepare import state_dir
    target = os.path.join(state_dir(), "native", f"sandbox-init-{digest}")
    if os.access(target, os.X_OK):
        return target
    import shutil
    if shutil.which(cc) is None:
        raise SetupError("init", f"the sandbox's init {INIT_PATH} is not built and there is "
                                 f"no C compiler ({cc}): install gcc and libc6-dev, then "
                                 "reinstall the package (pip install -e .)")
    return _compile(cc, CFLAGS, SOURCE, target, "init", "the sandbox's init")


def _digest(source: str, cc: str, flags: tuple[str, ...]) -> str:
    """The name of a build of `source` with `cc` and `flags`: a change to any is a new one."""
    import hashlib
    h = hashlib.sha256()
    for path in (source, *HEADERS):   # a header that changed is a new build too
        with open(path, "rb") as f:
            h.update(f.read())
    return hashlib.sha256(h.digest() + " ".join((cc, *flags)).encode()).hexdigest()[:16]


def _compile(cc: str, flags: tuple[str, ...], source: str, target: str, layer: str,
             what: str) -> str:
    """Build `source` into `target` in the state directory (0700), atomically: a
    concurrent launcher sees the old binary or the new one, never half of one."""
    import subprocess
    import tempfile
    from sandbox.launcher.prepare import state_subdir
    state_subdir("native")   # 0700, never a missing HOME
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target))
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, "-o", tmp, source], capture_output=True, text=True)
        if done.returncode:
            raise SetupError(layer, f"building {what} failed: "
                                    f"{done.stderr.strip().splitlines()[-1:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _older_than_source(binary: str) -> bool:
    """An editable checkout updated without a rebuild: its binary may lack a mode the
    Python side now uses (the stub's `--stub`); build a current one instead."""
    try:
        return os.stat(binary).st_mtime < newest_source(SOURCE)
    except OSError:
        return False


def open_init(path: str | None = None) -> int:
    """A descriptor of the init binary for execveat, taken before the view is built."""
    path = path or INIT_PATH
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError("init", f"the sandbox's init {path} is missing ({exc.strerror}): "
                                 "reinstall the package (pip install -e . builds it with gcc)"
                         ) from None


CLIENT_PATH = os.path.join(HERE, "sandbox")
CLIENT_SOURCE = os.path.join(HERE, "client.c")


def client_path() -> str:
    """The compiled thin client of `sandbox exec` (client.c): the installed one, else one
    built now into the state directory for this interpreter (an install that predates
    it). Raises SetupError without a C compiler."""
    import sys
    if os.access(CLIENT_PATH, os.X_OK) and not os.stat(CLIENT_PATH).st_mtime < \
            os.stat(CLIENT_SOURCE).st_mtime:
        return CLIENT_PATH
    cc, base = client_build(os.environ.get("CC", "cc"))
    # built outside the package: it cannot find its install from its own path
    # (client.c install_id), so the package directory is given
    from sandbox.thin.wire import package_dir
    flags = (*base, f'-DSANDBOX_PYTHON="{sys.executable}"', f'-DSANDBOX_PACKAGE="{package_dir()}"')
    digest = _digest(CLIENT_SOURCE, cc, flags)
    from sandbox.launcher.prepare import state_dir
    target = os.path.join(state_dir(), "native", f"sandbox-client-{digest}")
    if os.access(target, os.X_OK):
        return target
    import shutil
    if shutil.which(cc) is None:
        raise SetupError("client", f"no C compiler ({cc}) to build the thin client")
    return _compile(cc, flags, CLIENT_SOURCE, target, "client", "the thin client")
