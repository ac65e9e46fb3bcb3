"""Issue 10 finding 7b: one launcher-wide cap on live sandboxes, nested ones included.

A nested spawn borrows its waiting parent's slot for one child at a time;
other children wait for a free slot (or are refused at the per-run fan-out
limit). The count is judged on the host: every sandbox of the tree tells the
launcher when it runs and when it only waits for its children, in frame order,
and a handler counts the running ones at every message.
"""
from __future__ import annotations

import os
import threading

import pytest

from sandbox.launcher.launcher import Launcher

pytestmark = pytest.mark.isolation

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")


def tree(width, depth):
    return {"name": "fan", "imports": ["mw_actions"],
            "stages": [{"id": "s", "actions": [
                {"name": "mw.fan", "params": {"width": width, "depth": depth}}]}]}


def run_tree(cap, width, depth):
    la = Launcher(capture_output=True, max_concurrent=cap, max_depth=depth)
    lock = threading.Lock()
    state: dict[str, str] = {}
    peak = [0]

    def on_fan(msg, info):
        with lock:
            if msg.payload == "done":
                state.pop(info.run_id, None)
            else:
                state[info.run_id] = msg.payload
            running = sum(1 for s in state.values() if s == "busy")
            peak[0] = max(peak[0], running)
    la.on("fan", on_fan)
    r = la.spawn(tree(width, depth), code_paths=[CODE], timeout=300)
    return r, peak[0]


@pytest.mark.parametrize("cap", [1, 2])
def test_a_deep_and_wide_nested_tree_completes_within_the_cap(cap):
    width, depth = 2, 3
    r, peak = run_tree(cap, width, depth)
    assert r.status == "ok", (r.status, r.reason, r.error)
    got = r.store["tree"]
    assert got["bad"] == [] and got["ok"] == sum(width ** d for d in range(1, depth + 1)), got
    assert 1 <= peak <= cap, peak


# -- the slot logic as a property: any tree, any cap, no deadlock, never over the cap --

def simulate(cap, shape, seed):
    """Threads standing for runs: each takes a lease (borrowing its parent's), runs
    (counted), then waits for its children, which start in parallel."""
    import random
    import time
    from sandbox.launcher.slots import Slots
    slots, lock = Slots(cap), threading.Lock()
    running, peak, done = [0], [0], []
    rnd = random.Random(seed)

    def node(lender, children, tops=None):
        lease = slots.acquire(lender)
        try:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(rnd.random() / 2000)
            with lock:
                running[0] -= 1
            threads = [threading.Thread(target=node, args=(lease, c)) for c in children]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done.append(1)
        finally:
            slots.release(lease)

    tops = [threading.Thread(target=node, args=(None, t)) for t in shape]
    for t in tops:
        t.start()
    for t in tops:
        t.join(30)
    hung = any(t.is_alive() for t in tops)
    return hung, peak[0], len(done), slots.free


try:
    from hypothesis import given, settings, strategies as st
except ImportError:   # pragma: no cover - hypothesis is in the test extras
    given = None

if given is not None:
    TREES = st.recursive(st.just([]), lambda kids: st.lists(kids, max_size=4), max_leaves=24)

    def count(shape):
        return sum(1 + count(c) for c in shape)

    @settings(derandomize=True, max_examples=60, deadline=None)
    @given(st.integers(1, 3), st.lists(TREES, min_size=1, max_size=3), st.integers(0, 99))
    def test_any_tree_completes_without_deadlock_and_never_exceeds_the_cap(cap, shape, seed):
        hung, peak, done, free = simulate(cap, shape, seed)
        assert not hung
        assert done == count(shape) and peak <= cap and free == cap


def test_a_waiting_nested_spawn_is_cancelled_when_its_parent_ends():
    from sandbox.launcher.slots import Slots
    slots = Slots(1)
    parent = slots.acquire()
    first = slots.acquire(parent)          # borrows the parent's slot
    cancel = threading.Event()
    got = []
    t = threading.Thread(target=lambda: got.append(slots.acquire(parent, cancel)))
    t.start()
    t.join(0.2)
    assert t.is_alive()                    # waits: the only slot is lent to `first`
    cancel.set()
    t.join(5)
    assert got == [None]
    slots.release(first)
    slots.release(parent)
    assert slots.free == 1
