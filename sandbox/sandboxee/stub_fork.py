"""The compiled stub (sandbox/_native/stub_fork.c), through ctypes, for the zygote.

WHY: the stub used to be a fork of the warm template that ran Python until it
exec'd the waiter: decoding its request, joining the cgroups, entering the
namespaces, mapping its ids, forking PID 1. Each template page that Python wrote
was copied, then PID 1's and a Python action's PID 2's own; the work, the fork's
copy of the template's page tables and their teardown at the exec cost every run
CPU it need not (docs/benchmarks-journal.md, "The stub in C"). `spawn` hands the
request's raw bytes to C, which starts the stub as a clone sharing the zygote's
memory (a vfork: the OOM killer never chooses it), which answers the host itself;
the call returns once the stub has exec'd; PID 1
returns from the call as from a fork, and goes on in Python
(`sandbox.sandboxee.stub.pid1_of_compiled`).

The library is optional: not built, older than its source, of another API, no
executable waiter, or ``SANDBOX_STUB_C=0`` (A/B runs) -- `load()` is None and the
zygote forks the Python stub, as before. A request of a shape the C code does not
read is handed back (`spawn` returns None) before anything is started.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Union

from sandbox import _native

LIB_PATH = os.path.join(_native.HERE, "libstub_fork.so")
SOURCE = os.path.join(_native.HERE, "stub_fork.c")
API = 3
NOT_READ = -2     # sf_spawn: a request of another shape, nothing started
NO_PIDFD = -3     # sf_spawn: the stub ended before it answered; the host was told it was refused

Started = Union[tuple[int, int], int, None]
Spawn = Callable[[bytes, int, int], Started]


def load(init_path: str = _native.INIT_PATH) -> tuple[Spawn, Callable[[], bool]] | None:
    """`spawn(data, status_fd, reply_fd)` and, for PID 1, `namespaces()`; or None (module
    doc).
    Called once, in the zygote before it serves: the caps it reads are the host's."""
    if os.environ.get("SANDBOX_STUB_C", "1") == "0" or not os.access(init_path, os.X_OK):
        return None
    try:
        if os.stat(LIB_PATH).st_mtime < _native.newest_source(SOURCE):
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
    call.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                     ctypes.POINTER(ctypes.c_int)]
    call.restype = ctypes.c_int
    pidfd = ctypes.c_int(-1)   # one, made here: the loop allocates nothing per request

    def spawn(data: bytes, status_fd: int, reply_fd: int) -> Started:
        """The stub for the request `data`, the host answered on `reply_fd`: the stub's
        (pid, pidfd) in the zygote (pidfd -1 when out of descriptors), 0 in PID 1, None when the request is not read here
        (nothing started), NO_PIDFD when the host was told it was refused. Raises
        OSError when nothing was started (the caller answers)."""
        pid = int(call(data, len(data), status_fd, reply_fd, ctypes.byref(pidfd)))
        if pid == NOT_READ:
            return None
        if pid == NO_PIDFD or pid == 0:
            return pid
        if pid < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return pid, pidfd.value
    return spawn, lambda: bool(lib.sf_namespaces())
