"""JSON messages over an inherited socket: see docs/ipc-protocol.md."""
from sandbox.ipc.frames import (DEFAULT_MAX_FRAME, FrameDecoder, Message, decode_payload,
                                encode)

__all__ = ["DEFAULT_MAX_FRAME", "FrameDecoder", "Message", "decode_payload", "encode"]
