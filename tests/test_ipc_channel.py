"""The child's Channel: coalesced writes keep order, flush, and surface errors."""
from __future__ import annotations

import socket
import threading

import pytest

from sandbox.ipc.channel import DIRECT_SENDS, Channel
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


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ipc-writer"]


def test_a_quiet_channel_starts_no_writer_thread():
    # issue 14: most actions send a handful of messages; a thread would cost the
    # forked sandboxee its stack, a malloc arena and copied pages of the template
    a, b = socket.socketpair()
    chan = Channel(a.detach(), coalesce=True)
    before = len(_writers())
    for i in range(DIRECT_SENDS):
        chan.send("x", i)
    assert len(_writers()) == before
    b.setblocking(False)
    data = b.recv(1 << 20)              # already on the wire, without a flush
    assert [m.payload for m in FrameDecoder().feed(data)] == list(range(DIRECT_SENDS))
    chan.close()


def test_a_burst_starts_the_writer_and_keeps_the_order():
    a, b = socket.socketpair()
    chan = Channel(a.detach(), coalesce=True)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(_read_all(b)))
    reader.start()
    before = len(_writers())
    for i in range(DIRECT_SENDS + 500):
        chan.send("x", i)
    assert len(_writers()) == before + 1
    chan.close()
    reader.join()
    assert [m.payload for m in got] == list(range(DIRECT_SENDS + 500))
    assert len(_writers()) == before


def test_a_direct_write_error_is_raised_and_kept():
    a, b = socket.socketpair()
    chan = Channel(a.detach(), coalesce=True)
    b.close()
    with pytest.raises(OSError):
        chan.send("x", "y")
    with pytest.raises(OSError):          # and by every later send, as a writer's would be
        chan.send("x", "y")
    chan.close()
