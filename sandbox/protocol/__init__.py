"""The typed internal protocol between the monitor and the launcher.

Both sides are trusted code, but what they exchange is shaped by the child:
denied paths, error texts, counts. So each message here is a dataclass with a
*fixed, bounded shape*: every string has a maximum length, every list and
dict a maximum number of items (and, where the items are large, a byte
budget). One codec turns a message into JSON and back:

- `encode` never fails on a well-typed message and never exceeds
  `max_size(cls)`: what does not fit is clipped, and each clipping is counted
  in the message's ``clipped`` field (dotted field path -> items or characters
  dropped), so a truncation is visible, never silent.
- `decode` accepts exactly the shape: unknown or missing fields, a wrong
  type, a string or list over its bound, a non-finite number all raise
  ProtocolError. The launcher turns that into an honest error result.

Issue 14's one typed internal protocol: every message between the
launcher, the fork server, the monitor, the stub and PID 1 is one of the
dataclasses here, named in `MESSAGES`. On the wire a message is its
envelope ``{"type": NAME, "payload": {...}}``: one datagram on a
SOCK_SEQPACKET socket (`send`/`recv`, descriptors beside it with
SCM_RIGHTS), or one length-prefixed frame (sandbox.ipc.frames) on the
launcher's control stream (`to_frame`/`parse`). A receiver names the types it
accepts at that point; anything else, or a message not exactly of its shape,
is a ProtocolError. To add a field, add it to the dataclass with a default
and, for strings and containers, its bound (`bound(...)`); `max_size` and
the tests follow. To add a message, add its dataclass to `MESSAGES`.

One concept per module, all of it importable from here:

- `bounds`: `bound`, the field bounds, and the wire's limits;
- `report`: the exit report and its parts;
- `messages`: every other message, and `MESSAGES`;
- `pid1`: what PID 1 is handed as marshal, not as a message;
- `codec`: `encode`, `decode`, `max_size`;
- `wire`: the envelope, datagrams and frames;
- `fixed`: the messages the template's forks write and read without the codec.
"""
from sandbox.errors import ProtocolError as ProtocolError
from sandbox.protocol.bounds import *     # noqa: F401,F403  (each module's __all__)
from sandbox.protocol.report import *     # noqa: F401,F403
from sandbox.protocol.messages import *   # noqa: F401,F403
from sandbox.protocol.pid1 import *       # noqa: F401,F403
from sandbox.protocol.codec import *      # noqa: F401,F403
from sandbox.protocol.wire import *       # noqa: F401,F403
from sandbox.protocol.fixed import *      # noqa: F401,F403
