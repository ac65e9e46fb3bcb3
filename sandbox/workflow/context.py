"""What an action sees: the store, a logger, a message sink, where it runs.

Nothing here knows about processes or IPC. Everything that leaves an action
goes through an injected callable (`on_change`, the log sink, `send`), so the
same code runs in-process in tests and inside the sandboxed child, where the
launcher plugs in callables that write IPC frames. In particular, logging
never reaches stdout or stderr: the sandboxee's standard streams belong to
the action, not to the library.
"""
from __future__ import annotations

import logging
import traceback
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, MutableMapping

from sandbox.workflow.jsonvalue import check_json, copy_json, json_problem

OnChange = Callable[[str, str, Any], None]       # (op "put"|"delete", key, value)
LogSink = Callable[[str, str, dict], None]       # (level name, message, extra)
Send = Callable[[str, Any], None]                # (message type, JSON payload)
SpawnFn = Callable[[dict, Any], dict]            # (workflow dict, policy) -> result dict

_MISSING = object()
# Payload types that are JSON as they are and immutable: `send` neither checks nor
# copies them (exact types: a subclass would not come back as itself).
_PLAIN = frozenset({str, int, bool, type(None)})


class Bail(BaseException):
    """Raised by `ActionContext.bail`: end the workflow early, successfully.

    A BaseException (like SystemExit) so that an action's or a middleware's
    ``except Exception`` does not swallow a deliberate early exit.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class Store(MutableMapping[str, Any]):
    """The workflow's key-value store, holding JSON values only.

    Values are deep-copied on the way in and out, so the only way to change
    the store is `put`/`delete` (and the mapping methods built on them); that
    is what makes change tracking exact and lets the parent merge back just
    the keys the child touched. Each change also calls `on_change` at once.
    """

    def __init__(self, initial: Mapping[str, Any] | None = None, *,
                 on_change: OnChange | None = None) -> None:
        initial = dict(initial or {})
        check_json(initial, "store")
        self._data: dict[str, Any] = copy_json(initial)
        self._on_change = on_change
        self._changed: set[str] = set()
        self._deleted: set[str] = set()

    # -- mapping protocol (writes go through put/delete, so they are tracked)
    def __getitem__(self, key: str) -> Any:
        return copy_json(self._data[key])

    def __setitem__(self, key: str, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"Store({self._data!r})"

    # -- writes
    def put(self, key: str, value: Any) -> None:
        """Set `key` (a str) to a JSON value; TypeError/ValueError if it is not one."""
        if not isinstance(key, str):
            raise TypeError(f"store keys must be str, got {type(key).__name__} {key!r}")
        check_json(value, f"store[{key!r}]")
        self._data[key] = copy_json(value)
        self._changed.add(key)
        self._deleted.discard(key)
        if self._on_change is not None:
            self._on_change("put", key, copy_json(value))

    def delete(self, key: str) -> None:
        """Remove `key`; KeyError if absent (use ``pop(key, None)`` to tolerate that)."""
        if key not in self._data:
            raise KeyError(key)
        del self._data[key]
        self._deleted.add(key)
        self._changed.discard(key)
        if self._on_change is not None:
            self._on_change("delete", key, None)

    # -- reads
    def get(self, key: str, default: Any = None, *, type: Any = None) -> Any:  # noqa: A002
        """The value of `key` (a copy), or `default` if absent.

        With `type` (a type or tuple of types) a present value must match it,
        else TypeError naming the key. ``int`` does not accept bools (Python's
        bool is an int subclass, JSON's is not); ``float`` accepts ints and
        returns them as floats, since ``1`` and ``1.0`` are one JSON number.
        """
        if key not in self._data:
            return default
        value = copy_json(self._data[key])
        if type is None:
            return value
        return _typed(key, value, type)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        return self.get(key, default, type=int)

    def get_float(self, key: str, default: float | None = None) -> float | None:
        return self.get(key, default, type=float)

    def get_str(self, key: str, default: str | None = None) -> str | None:
        return self.get(key, default, type=str)

    def get_bool(self, key: str, default: bool | None = None) -> bool | None:
        return self.get(key, default, type=bool)

    def get_list(self, key: str, default: list | None = None) -> list | None:
        return self.get(key, default, type=list)

    def get_dict(self, key: str, default: dict | None = None) -> dict | None:
        return self.get(key, default, type=dict)

    def to_dict(self) -> dict[str, Any]:
        return copy_json(self._data)

    # -- change tracking since this Store was created
    def changed_keys(self) -> set[str]:
        """Keys whose last operation was a put (even of an equal value)."""
        return set(self._changed)

    def deleted_keys(self) -> set[str]:
        """Keys whose last operation was a delete."""
        return set(self._deleted)


def _typed(key: str, value: Any, expected: Any) -> Any:
    types = expected if isinstance(expected, tuple) else (expected,)
    for t in types:
        if t is int and type(value) is int:
            return value
        if t is float and type(value) in (int, float):
            return float(value)
        if t not in (int, float) and isinstance(value, t):
            return value
    names = " or ".join(getattr(t, "__name__", repr(t)) for t in types)
    raise TypeError(f"store key {key!r}: expected {names}, got "
                    f"{type(value).__name__} ({_short(value)})")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _SinkHandler(logging.Handler):
    """Hands each record to the sink as (level, message, extra); prints nothing.

    Errors from the sink propagate to the logging call instead of going
    through ``handleError`` (which would print to stderr).
    """

    def __init__(self, sink: LogSink, context: Mapping[str, Any]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink
        self._context = dict(context)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        extra = {k: (v if json_problem(v) is None else repr(v))
                 for k, v in getattr(record, "sandbox_extra", {}).items()}
        for k, v in self._context.items():
            extra.setdefault(k, v)
        self._sink(record.levelname, message, extra)


class _ActionLogger(logging.Logger):
    """A Logger outside logging's global tree, so nothing propagates to root."""

    def makeRecord(self, name: str, level: int, fn: str, lno: int, msg: object, args: Any,
                   exc_info: Any, func: str | None = None, extra: Mapping[str, object] | None = None,
                   sinfo: str | None = None) -> logging.LogRecord:
        record = super().makeRecord(name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)
        record.sandbox_extra = dict(extra or {})  # the caller's extras, kept apart
        return record


def make_logger(name: str, sink: LogSink, context: Mapping[str, Any]) -> logging.Logger:
    """A logger whose records go to `sink` only (never stdout/stderr)."""
    logger = _ActionLogger(name, logging.DEBUG)
    logger.propagate = False
    logger.addHandler(_SinkHandler(sink, context))
    return logger


class ActionContext:
    """Handed to each action (and to middleware, via the Invocation).

    `workflow`, `stage` and `action` are the ids/names of where it runs
    (stage/action are None at the workflow and stage levels); `params` is the
    ActionRef's params, read-only; `item`/`index` are set when one child
    processes one item of a parallel spawn, else None.
    """

    def __init__(self, *, store: Store, log_sink: LogSink, send: Send,
                 workflow: str, stage: str | None = None, action: str | None = None,
                 params: Mapping[str, Any] | None = None, run_id: str = "",
                 output_dir: str | Path | None = None, item: Any = None,
                 index: int | None = None, spawn: SpawnFn | None = None) -> None:
        self.store = store
        self.send_sink = send
        self.spawn_sink = spawn
        self.workflow, self.stage, self.action = workflow, stage, action
        self.params: Mapping[str, Any] = MappingProxyType(copy_json(dict(params or {})))
        self.run_id = run_id
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.item, self.index = item, index
        self._log_sink = log_sink
        self._logger: logging.Logger | None = None

    @property
    def logger(self) -> logging.Logger:
        """The action's logger (records go to the run's log sink only). Made on first
        use: most actions never log, and in a forked sandboxee a Logger, its handler
        and its lock touch pages of the warm template that are then copied (issue 14)."""
        if self._logger is None:
            where = {"workflow": self.workflow, "stage": self.stage, "action": self.action}
            name = ".".join(str(p) for p in ("sandbox.workflow", self.workflow, self.stage,
                                             self.action) if p)
            self._logger = make_logger(name, self._log_sink, where)
        return self._logger

    def send(self, type: str, payload: Any = None) -> None:  # noqa: A002
        """Send a custom message to the parent; `payload` must be a JSON value."""
        if not isinstance(type, str) or not type:
            raise TypeError(f"message type must be a non-empty str, got {type!r}")
        if payload.__class__ not in _PLAIN:
            check_json(payload, "payload")
            payload = copy_json(payload)
        self.send_sink(type, payload)

    def spawn(self, workflow: Any, policy: Any = None) -> dict[str, Any]:
        """Run `workflow` (a dict or Workflow) in a new sandbox; block; return its result.

        The result is a dict (status, reason, store, changed_keys, error, ...;
        see sandbox.nested). Nothing merges into this run's store by itself:
        put what you need from ``result["store"]``. `policy` (None, a policy
        name or a policy dict) may only be narrower than this run's. Only
        available in a launcher-spawned child: RuntimeError otherwise.
        """
        if self.spawn_sink is None:
            raise RuntimeError("ctx.spawn needs a launcher: run this workflow with "
                               "Launcher.spawn, not the in-process Runner")
        if hasattr(workflow, "to_dict"):
            workflow = workflow.to_dict()
        check_json(workflow, "workflow")
        check_json(policy, "policy")
        return self.spawn_sink(copy_json(workflow), copy_json(policy))

    def bail(self, reason: str = "") -> None:
        """End the whole workflow now, successfully (Outcome.bailed, bail_reason)."""
        raise Bail(str(reason))

    def __repr__(self) -> str:
        return (f"ActionContext(workflow={self.workflow!r}, stage={self.stage!r}, "
                f"action={self.action!r}, run_id={self.run_id!r})")
