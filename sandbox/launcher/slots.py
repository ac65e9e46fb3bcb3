"""One launcher-wide cap on live sandboxes, nested ones included.

`Launcher(max_concurrent=N)` makes N slots. A run holds a `Lease` on a slot
for its whole life. A nested run (an action's ``ctx.spawn``) may *borrow*
the lease of the run that asked for it, because that run is waiting for it:
one child at a time per parent. Its other children wait for a free slot (the
parent's comes back when the borrowing child ends), unless they are refused
before by the per-run fan-out limit (`sandbox.nested.MAX_IN_FLIGHT`) or
cancelled (the parent ended).

Why this never deadlocks: a waiting child needs either a free slot or its own
parent's lease, and the parent's lease is only ever lent down its own subtree,
whose deepest borrower runs (it waits for nothing), ends, and gives the lease
back to its parent. By induction every tree completes, with any cap >= 1.

What it bounds: at most N sandboxes *run* at once; with the chains of waiting
parents, at most N x (max_depth + 1) sandbox processes exist (depth 5, N = 1:
six, where nested spawns used to ignore the cap entirely: 73 at once).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

_POLL = 0.05   # seconds between looks at a waiter's cancel event


@dataclass(eq=False)
class Lease:
    """One run's hold on a slot: its own (lender None) or one borrowed from its parent."""
    lender: "Lease | None" = None
    lent: bool = False          # a nested run is using this lease's slot now
    done: bool = False          # the run holding it has ended
    borrowers: int = field(default=0)   # how many children borrowed it, over time


class Slots:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.free = cap
        self._cond = threading.Condition()

    def acquire(self, lender: Lease | None = None,
                cancel: threading.Event | None = None) -> Lease | None:
        """A lease: the lender's slot if it is idle, else a free one; waits for either.
        None when `cancel` is set first."""
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return None
                if lender is not None and not lender.lent and not lender.done:
                    lender.lent = True
                    lender.borrowers += 1
                    return Lease(lender=lender)
                if self.free > 0:
                    self.free -= 1
                    return Lease()
                self._cond.wait(_POLL if cancel is not None else None)

    def release(self, lease: Lease) -> None:
        with self._cond:
            lease.done = True
            self._give_back(lease)
            self._cond.notify_all()

    def _give_back(self, lease: Lease) -> None:
        if lease.lent or not lease.done:
            return      # still lent to a child (it gives the slot back when it ends)
        if lease.lender is None:
            self.free += 1
        else:
            parent = lease.lender
            parent.lent = False
            self._give_back(parent)   # a parent that ended meanwhile frees its slot now

    @property
    def in_use(self) -> int:
        with self._cond:
            return self.cap - self.free
