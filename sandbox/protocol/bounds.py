"""What bounds a message's fields, and the wire's limits (sandbox.protocol).

Every string of a message has a maximum length and every list and dict a maximum
number of items, declared with its field (`bound`), so that what the child shapes
(denied paths, error texts, counts) cannot grow a message past what its receiver
reads: the codec clips or refuses against these, and `max_size` sums them."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any

__all__ = ['INT_MIN', 'INT_MAX', 'DEFAULT_CHARS', 'DEFAULT_ITEMS', 'EXIT_REPORT_MAX',
           'SPEC_MAX', 'MAX_ARG_STRLEN', 'DATAGRAM_MAX', 'MAX_FDS', 'TYPED_AHEAD',
           'Json', 'bound', 'Bounds', 'bounds_of']


INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
DEFAULT_CHARS = 256
DEFAULT_ITEMS = 64
EXIT_REPORT_MAX = 4 << 20   # bytes: the exit frame's limit on both ends (max_size is below)
SPEC_MAX = 4 << 20          # bytes: the spec's policy, plan and environment together
# The longest string execve accepts (32 pages, "NAME=VALUE" and its NUL): an environment
# value's bound is the kernel's, not a smaller one of ours (a new-user probe: 100000
# characters were refused as "env{}: over its 65536", directly they run)
MAX_ARG_STRLEN = 32 * 4096
# One SOCK_SEQPACKET datagram must fit the sender's socket buffer (net.core.wmem_default,
# ~208 KiB unprivileged): the largest datagram any sender here makes. A spec over it
# cannot go to a spare's stub in one datagram and takes the cold path (monitor/spare.py).
DATAGRAM_MAX = 150_000
MAX_FDS = 8                 # descriptors beside one datagram
TYPED_AHEAD = 1024          # bytes of a terminal's typed-ahead lines a `-t` run takes

# Plain JSON (a policy or a plan as its own to_dict makes it): any JSON object whose
# encoding fits the field's `budget` bytes; parsed by the strict JSON reader.
Json = dict[str, Any]


def is_json(tp: object) -> bool:
    return typing.get_origin(tp) is dict and typing.get_args(tp)[1] is Any


def bound(*, chars: int = DEFAULT_CHARS, items: int = DEFAULT_ITEMS,
          budget: int | None = None, default: Any = dataclasses.MISSING,
          default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with bounds. `chars` applies to every string of the field
    (dict keys and tuple members included, not inside a nested dataclass),
    `items` to every list and dict of it, `budget` (bytes) to the JSON of a
    top-level list of the field: items past it are dropped."""
    meta = {"chars": chars, "items": items, "budget": budget}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


class Bounds(typing.NamedTuple):
    """A field's bounds, as `bound` declared them."""
    chars: int
    items: int
    budget: int | None


def bounds_of(cls: type, name: str) -> Bounds:
    """The bounds (`bound`) declared for field `name` of message `cls`: for the
    fixed-form writers and fit checks that skip the codec but must hold its limits."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    return Bounds(int(meta.get("chars", DEFAULT_CHARS)), int(meta.get("items", DEFAULT_ITEMS)),
                  meta.get("budget"))
