"""The compiled stub (sandbox/_native/stub_fork.c), through ctypes, for the zygote.

WHY: the stub used to be a fork of the warm template that ran Python until it
exec'd the waiter: decoding its request, joining the cgroups, entering the
namespaces, mapping its ids, forking PID 1. Each template page that Python wrote
was copied, then PID 1's and a Python action's PID 2's own, and the work cost
every run CPU it need not (docs/benchmarks.md, "The stub in C"). `spawn` hands
the request's raw bytes to C, which forks the stub and does all of it there;
PID 1 returns from the call as from a fork, and goes on in Python
(`sandbox.sandboxee.stub.pid1_of_compiled`).

The library is optional: not built, older than its source, of another API, no
executable waiter, or ``SANDBOX_STUB_C=0`` (A/B runs) -- `load()` is None and the
zygote forks the Python stub, as before. A request of a shape the C code does not
read is handed back (`spawn` returns None) before anything is forked.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, Callable

from sandbox import _native

LIB_PATH = os.path.join(_native.HERE, "libstub_fork.so")
SOURCE = os.path.join(_native.HERE, "stub_fork.c")
API = 1
NOT_READ = -2     # sf_spawn: a request of another shape, nothing forked

Spawn = Callable[[bytes, int], "int | None"]


def load(init_path: str = _native.INIT_PATH) -> tuple[Spawn, Callable[[], bool]] | None:
    """`spawn(data, status_fd)` and, for PID 1, `namespaces()`; or None (module doc).
    Called once, in the zygote before it serves: the caps it reads are the host's."""
    if os.environ.get("SANDBOX_STUB_C", "1") == "0" or not os.access(init_path, os.X_OK):
        return None
    try:
        if os.stat(LIB_PATH).st_mtime < os.stat(SOURCE).st_mtime:
            return None        # an editable checkout updated without a rebuild
        # PyDLL: called with the GIL held, as os.fork() is; PID 1 returns through it
        lib: Any = ctypes.PyDLL(LIB_PATH, use_errno=True)
    except OSError:
        return None
    if lib.sf_api() != API:
        return None
    from sandbox.isolation.limits import user_ns_caps
    caps = user_ns_caps()
    blob = b"".join(f"{k}\0{v}\0".encode() for k, v in caps.items())
    lib.sf_init.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_char_p,
                            ctypes.c_int]
    if lib.sf_init(os.fsencode(init_path), os.getuid(), os.getgid(), blob, len(caps)) != 0:
        return None
    call = lib.sf_spawn
    call.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    call.restype = ctypes.c_int

    def spawn(data: bytes, status_fd: int) -> int | None:
        """As a fork: 0 in PID 1, the stub's pid in the zygote; None when the request
        is not read here (nothing forked). Raises OSError when the fork failed."""
        pid = int(call(data, len(data), status_fd))
        if pid == NOT_READ:
            return None
        if pid < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return pid
    return spawn, lambda: bool(lib.sf_namespaces())
