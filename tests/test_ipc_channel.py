"""The child's Channel: coalesced writes keep order, flush, and surface errors."""
from __future__ import annotations

import socket
import threading

import pytest

from sandbox.ipc.channel import Channel
from sandbox.ipc.frames import FrameDecoder


def _read_all(sock: socket.socket) -> list:
    dec, out = FrameDecoder(), []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return out
        out.extend(dec.feed(data))


@pytest.mark.parametrize("coalesce", [False, True])
def test_messages_arrive_in_order_from_several_threads(coalesce):
    a, b = socket.socketpair()
    chan = Channel(a.detach(), coalesce=coalesce)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(_read_all(b)))
    reader.start()

    def burst(tag):
        for i in range(2000):
            chan.send("m", [tag, i])
    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chan.close()
    reader.join()
    assert len(got) == 8000
    for tag in range(4):  # each thread's messages in its own order
        assert [m.payload[1] for m in got if m.payload[0] == tag] == list(range(2000))


def test_flush_puts_everything_on_the_wire():
    a, b = socket.socketpair()
    chan = Channel(a.detach(), coalesce=True)
    for i in range(100):
        chan.send("x", i)
    chan.flush()
    b.setblocking(False)
    data = b.recv(1 << 20)
    assert [m.payload for m in FrameDecoder().feed(data)] == list(range(100))
    chan.close()


def test_a_write_error_is_raised_by_a_later_send():
    a, b = socket.socketpair()
    chan = Channel(a.detach(), coalesce=True)
    b.close()
    with pytest.raises(OSError):
        for _ in range(1000):
            chan.send("x", "y" * 1000)
            chan.flush()
    chan.close()
