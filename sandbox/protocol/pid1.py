"""What is handed to PID 1 before anything untrusted runs, as `marshal` of its fields
rather than as a message: the run's start (from the monitor host) and, for a Python
action, the plan its setup child made. PID 1 is a fresh fork of the warm template,
where the typed codec's Python would copy pages that are then the program's own."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sandbox.errors import ProtocolError
from sandbox.protocol.bounds import DATAGRAM_MAX, MAX_ARG_STRLEN, bound

__all__ = ['Pid1Start', 'start_to_bytes', 'start_from_bytes', 'PLAN_MAX', 'Pid1Plan',
           'plan_to_bytes', 'plan_from_bytes']


@dataclass
class Pid1Start:
    """What the monitor hands a waiting PID 1 with the run's descriptors (ipc, stdin,
    stdout, stderr, exit pipe): the run's containment context, built by the monitor
    host from the `Spec` it decoded, with the mount table it computed, and the spec's
    fields PID 1 reads besides (sandbox.monitor.runspec.pid1_start). Not a message of
    `MESSAGES`: it goes from the monitor to its own fork of the same code before
    anything untrusted runs, as `marshal` of its fields (`start_to_bytes`), and
    `context` is pickled, taken back by the C unpickler. Why: PID 1 is a fresh fork
    of the template, where decoding the spec's JSON and running the policy's
    constructors again wrote ~330 of the template's pages (1.5-2.8 ms a run,
    docs/benchmarks-journal.md); the C unpickler builds the same objects in a third of that."""
    mode: str = "exec"         # the spec's: a Python action's PID 1 leaves `context` to
                               # its setup child (sandbox/sandboxee/planned.py); "view":
                               # no run yet, a pooled view to build (runspec.view_start)
    in_memfd: bool = False     # over one datagram: `context` is the sealed memfd beside it
    context: bytes = b""       # pickle of (Spec without policy and plan, ContainContext)


_START_TAG = "pid1-start"


def start_to_bytes(start: Pid1Start) -> bytes:
    return _marshalled((_START_TAG, start.mode, start.in_memfd, start.context), DATAGRAM_MAX,
                       "pid1 start")


def start_from_bytes(data: bytes) -> Pid1Start:
    """`start_to_bytes`'s start back; ProtocolError when it is not one."""
    got = _unmarshalled(data, DATAGRAM_MAX, "pid1 start")
    if (type(got) is not tuple or len(got) != 4 or got[0] != _START_TAG
            or type(got[1]) is not str or type(got[2]) is not bool or type(got[3]) is not bytes):
        raise ProtocolError("pid1 start: not one")
    return Pid1Start(got[1], got[2], got[3])


def _marshalled(values: tuple[Any, ...], limit: int, what: str) -> bytes:
    import marshal
    data = marshal.dumps(values)
    if len(data) > limit:
        raise ProtocolError(f"{what}: {len(data)} bytes, over {limit}")
    return data


def _unmarshalled(data: bytes, limit: int, what: str) -> Any:
    import marshal
    if len(data) > limit:
        raise ProtocolError(f"{what}: {len(data)} bytes, over {limit}")
    try:
        return marshal.loads(data)
    except (ValueError, EOFError, TypeError) as exc:
        raise ProtocolError(f"{what}: {exc}") from None


# At most this many bytes: the setup child's answer to a Python action's PID 1 (`Pid1Plan`)
PLAN_MAX = 1 << 18


@dataclass
class Pid1Plan:
    """What a Python action's PID 1 still needs once its setup child has decoded the
    `Spec`, built the context and applied the namespace-wide layers
    (sandbox/sandboxee/planned.py): the environment, and the containment context for
    the per-process layers, without what only the child needed (the filesystem
    rules and plan, the mount table, the syscall lists once the seccomp program is
    compiled). Not a message of `MESSAGES`: it goes from a fork of PID 1 to PID 1,
    before anything untrusted runs, as `marshal` of its fields (`plan_to_bytes`), at
    most PLAN_MAX bytes, and `context` is a pickled `ContainContext`, taken back by the
    C unpickler: PID 1 decodes no JSON and runs no policy constructor, each page of
    whose Python would be the program's own (docs/benchmarks-journal.md)."""
    # (layer, text) of a SetupError (or of a spec that did not decode: layer "stub")
    error: list[str] | None = bound(chars=4096, items=2, default=None)
    env: dict[str, str] = bound(chars=MAX_ARG_STRLEN, items=1100, default_factory=dict)
    stdio_tty: bool = False   # the run has a terminal (the program takes it)
    # the descriptors beside the plan: which ContainContext field each one is
    fds: list[str] = bound(chars=32, items=8, default_factory=list)
    context: bytes = b""      # pickle of the ContainContext (above); b"" with an error
    # what PID 1's layers read of the policy (sandbox.sandboxee.planned.policy_key): the
    # context's own is None, PID 1 takes the template's policy of this key
    policy_key: list[Any] = bound(chars=64, items=4096, default_factory=list)


def plan_to_bytes(plan: Pid1Plan) -> bytes:
    """`plan` as marshal of its fields, in their order (Pid1Plan's docstring)."""
    return _marshalled(tuple(getattr(plan, f.name) for f in dataclasses.fields(plan)),
                       PLAN_MAX, "pid1 plan")


def plan_from_bytes(data: bytes) -> Pid1Plan:
    """`plan_to_bytes`'s plan back; ProtocolError when it is not one."""
    got = _unmarshalled(data, PLAN_MAX, "pid1 plan")
    try:
        return Pid1Plan(*got)
    except TypeError as exc:
        raise ProtocolError(f"pid1 plan: {exc}") from None
