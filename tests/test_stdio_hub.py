"""Every run's stdio relayed by one thread per process (sandbox.monitor.stdio_hub).

Issue 14: one monitor process for every sandbox, whose memory grows by at
most 64 KiB per sandbox. These tests attach several relays to one process
and judge it from its own kernel figures: its threads, its resident memory,
its descriptors, and the bytes that reach each caller.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.monitor import stdio_hub
from sandbox.monitor.stdio import StdioRelay, StdioSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_KIB = 64      # issue 14: the monitor's growth per sandbox it watches


def _in_fresh_process(code: str) -> dict:
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_many_runs_share_one_thread_and_each_costs_less_than_its_budget():
    fig = _in_fresh_process(
        "import json, dataclasses\n"
        "from sandbox.bench import stdio_hub as b\n"
        "print(json.dumps(dataclasses.asdict(b.measure(20))))\n")
    assert fig["threads"] == 2, fig                 # the main thread and the hub
    assert fig["delivered"] == [4 << 20] * 20, fig  # every byte, to every caller
    for phase in ("idle_kib", "blocked_kib", "flowing_kib"):
        assert fig[phase] <= BUDGET_KIB, fig


STALL = r"""
import fcntl, json, os, struct, subprocess, sys, termios, threading, time
from sandbox.bench.stdio_hub import attach, end, rss_kib, sync
from sandbox.monitor import stdio_hub
hub = stdio_hub.shared()
# A: a program flooding a caller that reads nothing. B: an ordinary run beside it,
# whose caller is another process (so this one holds nothing but the relays).
a = attach(["cat", "/dev/zero"])
b = attach(["sh", "-c", "cat; echo end >&2"])
def unread(fd):
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
for _ in range(3000):                 # until A's pipe to its caller is full
    if unread(a.out_r) >= 65536:
        break
    time.sleep(0.01)
sync(hub)
base = rss_kib()
caller = subprocess.Popen([sys.executable, "-c", CALLER, str(b.stdin_w), str(b.out_r),
                           str(b.err_r)], pass_fds=(b.stdin_w, b.out_r, b.err_r),
                          stdout=subprocess.PIPE, text=True)
for fd in (b.stdin_w, b.out_r, b.err_r):
    os.close(fd)
b.stdin_w, b.out_r, b.err_r = (os.open(os.devnull, os.O_RDWR) for _ in range(3))
said = caller.communicate(timeout=60)[0]
b.child.wait()
b.relay.finish()
grew = rss_kib() - base
result = json.loads(said)
result.update(a_full=unread(a.out_r), a_blocked=a.child.poll() is None, grew_kib=grew,
              threads=threading.active_count())
end([a, b])
print(json.dumps(result))
"""

CALLER = r"""
import json, os, sys, threading
stdin_w, out_r, err_r = map(int, sys.argv[1:])
def feed():
    os.write(stdin_w, b"hello\n" * 100000)
    os.close(stdin_w)
threading.Thread(target=feed).start()
out = bytearray()
while chunk := os.read(out_r, 65536):
    out += chunk
print(json.dumps({"ok": out == b"hello\n" * 100000, "err": os.read(err_r, 100).decode()}))
"""


def test_a_flooded_caller_that_reads_nothing_stalls_neither_the_hub_nor_another_run():
    got = _in_fresh_process(f"CALLER = {CALLER!r}\n{STALL}")
    assert got["ok"] and got["err"] == "end\n", got   # B's 600 KB both ways, complete
    assert got["a_blocked"] and got["a_full"] == 65536, got   # A waits, its pipe full
    assert got["grew_kib"] <= 2 * BUDGET_KIB, got
    assert got["threads"] == 2, got


LEAKS = r"""
import json, os
from sandbox.bench.stdio_hub import attach, end, sync
from sandbox.monitor import stdio_hub
end([attach(["true"])])
before = sorted(os.listdir("/proc/self/fd"))
std = [os.fstat(fd) for fd in (0, 1, 2)]
runs = [attach(["sh", "-c", "echo out; echo err >&2; cat"]) for _ in range(8)]
for r in runs:
    os.close(r.stdin_w); r.stdin_w = os.open(os.devnull, os.O_WRONLY)
outs = [(os.read(r.out_r, 100), os.read(r.err_r, 100)) for r in runs]
for r in runs:
    r.child.wait()
    r.relay.finish()
end(runs)
sync(stdio_hub.shared())
after = sorted(os.listdir("/proc/self/fd"))
same = [(a.st_dev, a.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        for a, fd in zip(std, (0, 1, 2))]
print(json.dumps({"outs": [[o.decode(), e.decode()] for o, e in outs],
                  "leaked": [fd for fd in after if fd not in before], "std_untouched": same}))
"""


def test_finished_relays_leave_no_descriptor_and_never_touch_the_process_stdio():
    got = _in_fresh_process(LEAKS)
    assert got["outs"] == [["out\n", "err\n"]] * 8, got
    assert got["leaked"] == [], got
    assert got["std_untouched"] == [True, True, True], got


# -- every byte, in order, whatever the writer's and reader's pace ------------------------

def _relay_with_held_ends() -> tuple[StdioRelay, list[int], tuple[int, int, int]]:
    """A relay whose sandbox ends this test holds (dups), as a program would."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    relay = StdioRelay(StdioSpec(), (in_r, out_w, err_w))
    ends = [os.dup(fd) for fd in relay.sandbox]
    relay.started()
    return relay, ends, (in_w, out_r, err_r)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for c in chunks:
        view = memoryview(c)
        while view:
            view = view[os.write(fd, view):]
    os.close(fd)


def _read_all(fd: int, sizes: list[int]) -> bytes:
    out, i = b"", 0
    while True:
        chunk = os.read(fd, sizes[i % len(sizes)])
        i += 1
        if not chunk:
            os.close(fd)
            return out
        out += chunk


chunks = st.lists(st.binary(min_size=0, max_size=70000), max_size=8)
sizes = st.lists(st.integers(1, 100000), min_size=1, max_size=5)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(st.lists(st.tuples(chunks, chunks, chunks, sizes), min_size=1, max_size=3))
def test_every_byte_arrives_in_order_on_its_own_stream(runs):
    relays, threads, results = [], [], {}
    for n, (stdin, stdout, stderr, pace) in enumerate(runs):
        relay, (sb_in, sb_out, sb_err), (in_w, out_r, err_r) = _relay_with_held_ends()
        relays.append(relay)
        for key, fn, args in (
                ((n, "to_in"), _write_all, (in_w, stdin)),
                ((n, "in"), _read_all, (sb_in, pace)),
                ((n, "to_out"), _write_all, (sb_out, stdout)),
                ((n, "to_err"), _write_all, (sb_err, stderr)),
                ((n, "out"), _read_all, (out_r, pace)),
                ((n, "err"), _read_all, (err_r, pace[::-1]))):
            t = threading.Thread(target=lambda k=key, f=fn, a=args: results.__setitem__(
                k, f(*a)))
            t.start()
            threads.append(t)
    for t in threads:
        t.join(60)
    for relay in relays:
        relay.finish()
        assert relay.closed
    for n, (stdin, stdout, stderr, _) in enumerate(runs):
        assert results[(n, "in")] == b"".join(stdin)
        assert results[(n, "out")] == b"".join(stdout)
        assert results[(n, "err")] == b"".join(stderr)


def _own_fds() -> set[str]:
    """This process's descriptors, once its shared hub exists: the hub is made at first
    use and kept for the process's life, so a test run alone must not count its
    epoll and wake pipe as leaked (the unprivileged CI pass ran one such test first)."""
    stdio_hub.shared()
    return set(os.listdir("/proc/self/fd"))


def test_a_relay_never_started_closes_what_it_was_given():
    before = _own_fds()
    fds = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
    relay = StdioRelay(StdioSpec(tty=(24, 80)), (fds[0][0], fds[1][1], fds[2][1]))
    relay.finish()
    for r, w in fds:
        for fd in (r, w):
            if fd not in (fds[0][0], fds[1][1], fds[2][1]):
                os.close(fd)
    assert _own_fds() == before


def test_a_closed_reader_hangs_up_the_program_instead_of_blocking_it():
    relay, (sb_in, sb_out, sb_err), (in_w, out_r, err_r) = _relay_with_held_ends()
    os.close(out_r)                       # the caller's reader is gone
    try:
        while True:                        # until the relay's read end is closed too
            os.write(sb_out, b"x" * 65536)
    except BrokenPipeError:
        pass
    for fd in (sb_in, sb_out, sb_err, in_w, err_r):
        os.close(fd)
    relay.finish()
    assert relay.closed


def test_the_hub_is_one_per_process():
    assert stdio_hub.shared() is stdio_hub.shared()


SIGPIPE_DEFAULT = r"""
import json, os, signal
signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # as a process that restored it would have
from sandbox.bench.stdio_hub import attach, end
a, b = attach(["yes"]), attach(["sh", "-c", "cat"])
os.read(a.out_r, 10)
os.close(a.out_r)                 # A's reader leaves while A writes
a.out_r = os.open(os.devnull, os.O_RDONLY)
yes = a.child.wait()
os.write(b.stdin_w, b"still here\n")
os.close(b.stdin_w)
b.stdin_w = os.open(os.devnull, os.O_WRONLY)
print(json.dumps({"yes": yes, "b": os.read(b.out_r, 100).decode()}))
end([a, b])
"""


def test_a_reader_leaving_is_that_streams_end_not_the_processs():
    # The hub's write to the gone reader is EPIPE for that stream even where SIGPIPE
    # is not ignored: every other run of the process goes on.
    got = _in_fresh_process(SIGPIPE_DEFAULT)
    assert got == {"yes": -13, "b": "still here\n"}, got


def _attach_child(spec: StdioSpec, cmd: list[str]):
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    relay = StdioRelay(spec, (in_r, out_w, err_w))
    sb = relay.sandbox
    child = subprocess.Popen(cmd, stdin=sb[0], stdout=sb[1], stderr=sb[2],
                             start_new_session=True)
    relay.started()
    return relay, child, (in_w, out_r, err_r)


def test_a_pty_whose_callers_terminal_is_gone_is_hung_up():
    # Else the program would wait forever writing to a master nobody reads.
    before = _own_fds()
    relay, child, (in_w, out_r, err_r) = _attach_child(StdioSpec(tty=(24, 80)), ["yes"])
    try:
        assert os.read(out_r, 100).startswith(b"y\r\n")   # through the pty's line discipline
        os.close(out_r)
        assert child.wait(timeout=60) != 0      # its write failed (EIO): it ended
    finally:
        child.kill()
        child.wait()
    relay.finish()
    for fd in (in_w, err_r):
        os.close(fd)
    assert relay.closed and _own_fds() == before


def test_finish_gives_up_on_a_reader_that_takes_nothing_and_closes_everything():
    before = _own_fds()
    relay, child, (in_w, out_r, err_r) = _attach_child(StdioSpec(), ["cat", "/dev/zero"])
    os.read(out_r, 1)
    child.kill()                 # the sandbox is gone; its output still fills the pipes
    child.wait()
    relay.finish(timeout=0.2)    # the report is not held by a caller that reads nothing
    assert relay.closed
    got = 0
    while chunk := os.read(out_r, 65536):   # what was delivered, then end of stream
        got += len(chunk)
    assert got >= 65536 - 1
    for fd in (in_w, out_r, err_r):
        os.close(fd)
    assert _own_fds() == before


def test_a_watch_fires_once_when_readable_and_never_after_unwatch():
    """What the stdin lender waits on (sandbox/monitor/stdin_lend.py): an empty pipe."""
    import time
    hub = stdio_hub.StdioHub()
    r, w = os.pipe()
    calls: list[int] = []
    fired = threading.Event()
    hub.call(lambda: hub.watch(r, lambda: (calls.append(1), fired.set())))
    time.sleep(0.05)
    assert calls == []                      # nothing to read yet
    os.write(w, b"x")
    assert fired.wait(10)
    time.sleep(0.1)
    assert calls == [1]                     # once, though the pipe stays readable
    r2, w2 = os.pipe()
    other = threading.Event()
    dropped = threading.Event()
    hub.call(lambda: hub.watch(r2, other.set))
    hub.call(lambda: (hub.unwatch(r2), dropped.set()))
    assert dropped.wait(10)             # written only once the unwatch has run
    os.write(w2, b"x")
    assert not other.wait(0.3)
    for fd in (r, w, r2, w2):
        os.close(fd)
