"""The audit loop's compiled fast path (sandbox/_native/notify_fast.c), through ctypes.

Python decides every *new* call: `AuditLoop` handles the first call of each
(syscall, flags, absolute path) itself, and when its answer was a plain CONTINUE
whose record depends on nothing but that key (and on the resolver's directory
cache, which is cleared together with this one), it `put`s the key with the
record it made. The C loop answers the repeats itself -- receive, read the path
from the caller, re-check that a followed final name is still no symlink,
CONTINUE -- and hands back compact records (slot, thread id, first and last
time, count: consecutive repeats of one key by one thread are one record) that `AuditLoop`
turns into the same records, tally and seq as before. Everything else comes
back unanswered (`MISS`), with its raw notification. A serve that answered
MAX_BATCH calls says `FULL`: the hub serves the run again at once, without an
epoll round, when nothing else is ready.

Directory keys: when such a first call named a final name in a directory whose
every name the policy decides alike (`AuditEngine.children_alike`: no rule, deny,
glob or sandbox area names a child of it), `AuditLoop` also `dput`s the spelling of
its directory, so a call naming *another* name there is answered here too (the
name re-examined as Python's resolver would) and comes back with the name, which
`AuditLoop` joins with the directory's real path. An import's probing or a build's
lookups name each file once: without these keys every one of them was Python's.

Why: a Python loop between two system calls costs more than the kernel's whole
round trip (docs/benchmarks-journal.md, "The audit loop"); answering repeats without
the interpreter is what brings audited opens near the C floor.

The library is built by setup.py's `build_native` (no Python headers: a plain
shared object, called with the GIL released). Without it -- an install that
predates it, a source newer than the build, or ``SANDBOX_AUDIT_FAST=0`` --
`load()` is None and the Python loop serves every call, as before.
"""
from __future__ import annotations

import ctypes
import functools
import os
import struct
import threading
from typing import Any

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_native")
LIB_PATH = os.path.join(HERE, "libnotify_fast.so")
SOURCE = os.path.join(HERE, "notify_fast.c")

YIELD, MISS, GONE, HUP, SEND_ERR, RECV_ERR, FULL = range(7)
NO_ARG = 0xFF
NRS = 512
SLOTS = 128
DSLOTS = 64               # directory keys (slots SLOTS .. SLOTS + DSLOTS - 1)
PATH = 256                # the longest cached path or prefix, with its NUL
API = 3
EMPTY_FSTAT = 0x80          # a path argument's bit: "" with AT_EMPTY_PATH is fstat(2)
MAX_BATCH = 64            # calls answered per serve (the hub's CHARGE_EVERY)
_REC = struct.Struct("<IIddII")   # struct nf_rec (its `spare`: a NAME's offset + 1)
AGAIN = object()          # AuditLoop.dispatch: a full batch, serve this run again (hub)
_NOTIF_SIZE = 80

_lib: Any = None
_tried = False


def load() -> Any:
    """The loaded library, or None (then the Python loop serves everything)."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("SANDBOX_AUDIT_FAST", "1") == "0":
        return None
    try:
        if os.stat(LIB_PATH).st_mtime < os.stat(SOURCE).st_mtime:
            return None        # an editable checkout updated without a rebuild
        lib = ctypes.CDLL(LIB_PATH)
    except OSError:
        return None
    vp, i32, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    if [lib.nf_sizes(i) for i in range(5)] != [_REC.size, _NOTIF_SIZE, NRS, PATH, API]:
        return None            # a library of another layout: never misread its records
    lib.nf_new.restype = vp
    lib.nf_new.argtypes = [i32, ctypes.c_char_p, ctypes.c_char_p]
    lib.nf_free.argtypes = [vp]
    lib.nf_clear.argtypes = [vp]
    lib.nf_put.restype = i32
    lib.nf_put.argtypes = [vp, u32, u32, ctypes.c_char_p, u32, ctypes.c_int32, u32]
    lib.nf_serve.restype = i32
    lib.nf_serve.argtypes = [vp, i32, i32, i32, i32, vp, ctypes.POINTER(i32), vp]
    lib.nf_dput.restype = i32
    lib.nf_dput.argtypes = [vp, u32, u32, ctypes.c_char_p, u32, ctypes.c_int32, u32]
    lib.nf_miss.restype = vp
    lib.nf_miss.argtypes = [vp]
    lib.nf_err.argtypes = [vp]
    lib.nf_vanished.restype = ctypes.c_uint
    lib.nf_vanished.argtypes = [vp]
    lib.nf_unrecorded.restype = ctypes.c_uint
    lib.nf_unrecorded.argtypes = [vp]
    _lib = lib
    return lib


@functools.lru_cache(maxsize=64)
def _tables(eligible: tuple[tuple[int, int, int | None], ...]
            ) -> tuple[bytes, bytes, frozenset[int]]:
    """(path argument by syscall, flags argument by syscall, the syscalls): one copy per
    syscall policy, shared by its runs (the C side keeps pointers to the two tables,
    which this cache and each `FastPath` keep alive; issue 14: the host's memory per run)."""
    path_arg = bytearray([NO_ARG]) * NRS
    flags_arg = bytearray([NO_ARG]) * NRS
    for nr, pa, fa in eligible:
        if 0 <= nr < NRS:
            path_arg[nr] = pa
            flags_arg[nr] = NO_ARG if fa is None else fa
    return bytes(path_arg), bytes(flags_arg), frozenset(nr for nr, _, _ in eligible)


class _Batch:
    """One serving thread's output buffer: the records of its last `serve`, read back
    before that thread serves again (so one per hub thread, not one per run)."""

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(_REC.size * MAX_BATCH)
        self.names = ctypes.create_string_buffer(PATH * MAX_BATCH)   # directory keys' NAMEs
        self.view = memoryview(self.buf).cast("B")
        self.count = ctypes.c_int(0)
        self.count_ref = ctypes.byref(self.count)


class _PerThread(threading.local):
    batch: _Batch | None = None


_batches = _PerThread()


class FastPath:
    """One run's C cache and loop. Used by the hub's thread only (like `Listener`)."""

    def __init__(self, lib: Any, fd: int, eligible: dict[int, tuple[int, int | None]]) -> None:
        """`eligible`: syscall number -> (path argument, flags argument or None); the
        path argument with EMPTY_FSTAT for a stat-family call (see `unrecorded`)."""
        self._tables = path_arg, flags_arg, self.eligible = \
            _tables(tuple(sorted((nr, pa, fa) for nr, (pa, fa) in eligible.items())))
        self._lib = lib
        self._h = lib.nf_new(fd, path_arg, flags_arg)
        if not self._h:
            raise MemoryError("notify_fast: nf_new")
        self._batch: _Batch | None = None     # the serving thread's, at the first serve
        # slot -> record fields (a directory key's: its directory's real path for the path)
        self.slots: list[tuple[Any, ...] | None] = [None] * (SLOTS + DSLOTS)

    def serve(self, epfd: int, timeout_ms: int, again: bool = False) -> tuple[int, int]:
        """(code, records): answer cached calls until something else is due. `again`:
        after FULL (the listener was not reported ready: wait on it and `epfd` alike,
        up to `timeout_ms`, from the first call on)."""
        b = self._batch
        if b is None:
            b = self._batch = _batches.batch or _Batch()
            _batches.batch = b
        code = self._lib.nf_serve(self._h, epfd, MAX_BATCH, timeout_ms, 0 if again else 1,
                                  b.buf, b.count_ref, b.names)
        return code, b.count.value

    def records(self, count: int) -> Any:
        """(slot, thread id, first time, last time, count, name) of each run of
        consecutive calls with one key answered by the last `serve`; `name`: the final
        name (bytes) a directory key's call named, else 0."""
        assert self._batch is not None, "serve() first"
        return _REC.iter_unpack(self._batch.view[:count * _REC.size])

    def name(self, at: int) -> bytes:
        """The NAME of a directory key's record (`records`' last field, when not 0)."""
        assert self._batch is not None, "serve() first"
        # read up to its NUL in place (`.raw` would copy the whole buffer per record)
        return ctypes.string_at(ctypes.addressof(self._batch.names) + at - 1)

    def miss(self) -> bytes:
        """The raw struct seccomp_notif a MISS handed over (unanswered)."""
        return ctypes.string_at(self._lib.nf_miss(self._h), _NOTIF_SIZE)

    def err(self) -> int:
        return int(self._lib.nf_err(self._h))

    def vanished(self) -> int:
        return int(self._lib.nf_vanished(self._h))

    def unrecorded(self) -> int:
        """Calls of the last serve that were fstat(2) by another name (a stat-family
        call of "" with AT_EMPTY_PATH): answered, counted as checked, not recorded."""
        return int(self._lib.nf_unrecorded(self._h))

    def put(self, nr: int, flags: int, raw: bytes, dirfd: int, name_off: int,
            record: tuple[Any, ...]) -> bool:
        slot = self._lib.nf_put(self._h, nr, flags & 0xFFFFFFFF, raw, len(raw), dirfd, name_off)
        if slot < 0:
            return False
        self.slots[slot] = record
        return True

    def dput(self, nr: int, flags: int, prefix: bytes, dirfd: int, enoent_ok: bool,
             record: tuple[Any, ...]) -> bool:
        """Let the compiled loop answer any path `prefix` + NAME with this syscall and
        flags (see notify_fast.c, struct nf_dent); `record`'s path is the directory's."""
        slot = self._lib.nf_dput(self._h, nr, flags & 0xFFFFFFFF, prefix, len(prefix), dirfd,
                                 int(enoent_ok))
        if slot < 0:
            return False
        self.slots[slot] = record
        return True

    def clear(self) -> None:
        if self._h:
            self._lib.nf_clear(self._h)

    def close(self) -> None:
        if self._h:
            self._lib.nf_free(self._h)
            self._h = None
