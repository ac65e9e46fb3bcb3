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

A `Gate` narrows who may take a *free* slot for a nested run: the service
gives its runs one that counts against the submitting token's concurrency
(`sandbox.service.queue`), so one tenant's fan-out cannot take every slot
of the server (probe2 finding 3: a `max_concurrent = 1` token held all four).
A refused child waits for its parent's slot, so the argument above holds.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol


class Gate(Protocol):
    """Permission for a nested run to take a free slot beyond its parent's."""

    def take(self) -> bool:
        """True and count it, or False (never blocks: called under the slots' lock)."""

    def give(self) -> None:
        """A slot `take` allowed is free again."""


class BorrowOnly:
    """A gate that never allows one: a tree of nested runs uses its root's slot only
    (a scale-out worker's runs, whose token's other runs are on other hosts)."""

    def take(self) -> bool:
        return False

    def give(self) -> None:
        pass

_POLL = 0.05   # seconds between looks at a waiter's cancel event


@dataclass(eq=False)
class Lease:
    """One run's hold on a slot: its own (lender None) or one borrowed from its parent."""
    lender: "Lease | None" = None
    lent: bool = False          # a nested run is using this lease's slot now
    done: bool = False          # the run holding it has ended
    borrowers: int = field(default=0)   # how many children borrowed it, over time
    gate: "Gate | None" = None  # the gate that allowed this (free) slot, told when it frees


class Slots:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.free = cap
        self._cond = threading.Condition()

    def acquire(self, lender: Lease | None = None, cancel: threading.Event | None = None,
                gate: Gate | None = None) -> Lease | None:
        """A lease: the lender's slot if it is idle, else a free one (when `gate`
        allows it); waits for either. None when `cancel` is set first."""
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return None
                if lender is not None and not lender.lent and not lender.done:
                    lender.lent = True
                    lender.borrowers += 1
                    return Lease(lender=lender)
                if self.free > 0 and (gate is None or gate.take()):
                    self.free -= 1
                    return Lease(gate=gate)
                # a gate opens without notifying: look again at a poll
                self._cond.wait(_POLL if cancel is not None or gate is not None else None)

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
            if lease.gate is not None:
                lease.gate.give()
        else:
            parent = lease.lender
            parent.lent = False
            self._give_back(parent)   # a parent that ended meanwhile frees its slot now

    @property
    def in_use(self) -> int:
        with self._cond:
            return self.cap - self.free
