"""IPC middleware: transform, drop or refuse messages at either end of the channel.

A middleware is an object with two methods over `Message` (type, payload and
extra frame fields such as ``mac``):

    outbound(msg) -> Message | None     before the frame is encoded and sent
    inbound(msg)  -> Message | None     after a frame is decoded, before it is used

Returning None drops the message. Raising refuses it: on the launcher side
the message is *rejected* (recorded in `RunResult.rejected`, the reader goes
on), except `ProtocolError`, which is a protocol violation (the sandbox is
killed); on the child side the exception propagates into the action that
sent (its ``ctx.send`` or ``store.put`` raises).

THE order rule, the same in both directions and at both ends, like the
workflow Runner: the first registered is the outermost. Outbound applies
mw1, mw2, ... mwN, then the wire; inbound applies mwN ... mw1, so mw1 sees an
incoming message last and unwraps what it wrapped. Each registration puts one
entry at the same position of the launcher's chain and of the child's chain
(a middleware with only one half is the identity on the other side), so an
encrypt/decrypt or sign/verify pair registered once composes across the two
ends: child mwN wraps last, launcher mwN unwraps first.

`transform(outbound=f, inbound=g)` adapts plain ``(type, payload) -> (type,
payload) | None`` functions; extra fields pass through untouched.

Child-side middleware cannot be Python objects of the launcher's process:
the launcher sends ``{"factory": "module:function", "params": {...}}`` specs
in the `start` frame and the child calls ``function(**params)`` to build each
one (see `build_chain`). A launcher-side middleware says what its child half
is with `child_spec()`.
"""
from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from sandbox.errors import InputError
from sandbox.ipc.frames import Message

Transform = Callable[[str, Any], "tuple[str, Any] | None"]


@dataclass(frozen=True)
class SpawnInfo:
    """What a per-run middleware factory or a hook knows about the run."""
    run_id: str
    depth: int = 0                     # 0 = spawned by the caller, 1 = by an action of depth 0, ...
    parent_run_id: str | None = None
    item: Any = None
    index: int | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)  # when spawn() was called


class IpcMiddleware:
    """Base class: the identity at both ends, no child half, nothing at the end of a run."""

    name = "middleware"

    def outbound(self, msg: Message) -> Message | None:
        return msg

    def inbound(self, msg: Message) -> Message | None:
        return msg

    def child_spec(self) -> dict[str, Any] | None:
        """``{"factory": "module:function", "params": {...}}`` for the child's chain, or None."""
        return None

    def finish(self, result: Any) -> None:
        """Called with the RunResult once the run is over (e.g. to store metrics)."""


def replace_msg(msg: Message, type_: str | None = None, payload: Any = dataclasses.MISSING,
                extra: Mapping[str, Any] | None = None) -> Message:
    """A copy of `msg` with some parts changed; keeps its wire size for metrics."""
    return Message(msg.type if type_ is None else type_,
                   msg.payload if payload is dataclasses.MISSING else payload,
                   dict(msg.extra if extra is None else extra), msg.size)


class FunctionMiddleware(IpcMiddleware):
    """(type, payload) functions as a middleware; extra frame fields are kept."""

    def __init__(self, outbound: Transform | None = None, inbound: Transform | None = None,
                 *, name: str = "transform", child: Mapping[str, Any] | None = None) -> None:
        self._out, self._in, self.name = outbound, inbound, name
        self._child = dict(child) if child is not None else None

    @staticmethod
    def _apply(fn: Transform | None, msg: Message) -> Message | None:
        if fn is None:
            return msg
        got = fn(msg.type, msg.payload)
        if got is None:
            return None
        type_, payload = got
        return replace_msg(msg, type_, payload)

    def outbound(self, msg: Message) -> Message | None:
        return self._apply(self._out, msg)

    def inbound(self, msg: Message) -> Message | None:
        return self._apply(self._in, msg)

    def child_spec(self) -> dict[str, Any] | None:
        return self._child


def transform(outbound: Transform | None = None, inbound: Transform | None = None, *,
              name: str = "transform") -> FunctionMiddleware:
    """A launcher-side middleware from (type, payload) functions."""
    return FunctionMiddleware(outbound, inbound, name=name)


def child(factory: str, **params: Any) -> FunctionMiddleware:
    """A middleware that runs only in the child: ``module:function`` called with `params`.

    The module must be importable inside the sandbox (the runtime, or a
    directory passed as `code_paths`); `params` must be JSON.
    """
    if factory.count(":") != 1:
        raise InputError(f"middleware factory {factory!r}: expected 'module:function'")
    return FunctionMiddleware(name=factory, child={"factory": factory, "params": params})


class Chain:
    """Middleware in registration order; see the module docstring for THE order rule."""

    def __init__(self, middleware: Iterable[Any] = ()) -> None:
        self.middleware = list(middleware)

    def outbound(self, msg: Message) -> Message | None:
        for mw in self.middleware:
            msg = mw.outbound(msg)
            if msg is None:
                return None
        return msg

    def inbound(self, msg: Message) -> Message | None:
        for mw in reversed(self.middleware):
            msg = mw.inbound(msg)
            if msg is None:
                return None
        return msg

    def __len__(self) -> int:
        return len(self.middleware)


class _Identity(IpcMiddleware):
    name = "identity"


def build_chain(specs: Sequence[Mapping[str, Any]]) -> Chain:
    """The child's chain from the specs of the `start` frame (None entries = identity)."""
    out: list[Any] = []
    for spec in specs:
        if spec is None:
            out.append(_Identity())
            continue
        module, _, name = str(spec["factory"]).partition(":")
        fn = getattr(importlib.import_module(module), name)
        mw = fn(**dict(spec.get("params") or {}))
        if not (hasattr(mw, "outbound") and hasattr(mw, "inbound")):
            raise TypeError(f"middleware factory {spec['factory']!r} returned {mw!r}, "
                            "which has no outbound/inbound methods")
        out.append(mw)
    return Chain(out)


def is_instance(obj: Any) -> bool:
    """A ready middleware (shared by every run) rather than a per-run factory."""
    return not isinstance(obj, type) and hasattr(obj, "outbound") and hasattr(obj, "inbound")


def instantiate(registered: Sequence[Any], info: SpawnInfo) -> list[Any]:
    """Per-run middleware: instances as they are, factories called with `info`."""
    return [obj if is_instance(obj) else obj(info) for obj in registered]


def child_specs(middleware: Sequence[Any]) -> list[dict[str, Any] | None]:
    """One entry per middleware, aligned with the launcher chain (None = identity)."""
    specs = [getattr(mw, "child_spec", lambda: None)() for mw in middleware]
    return specs if any(s is not None for s in specs) else []
