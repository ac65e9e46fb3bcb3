"""Parallel spawns: one sandboxed child per item, a concurrency limit, fail-fast.

    results = run_parallel(launcher, workflow, items, concurrency=4)

Each item runs in its own sandbox (``ctx.item`` / ``ctx.index`` in the
child). `Launcher.spawn` is blocking and thread-safe, so this is a pool of
`concurrency` threads taking the next index in order.

With `fail_fast` (the default) the first result that is not ok sets the
shared cancel token: children still running are killed (the monitor SIGKILLs
the sandbox; if it has not within `grace` seconds, the monitor itself is
killed and PDEATHSIG takes the sandbox down) and end with status "error",
reason "cancelled"; items not started yet also get status "error", reason
"cancelled", with an empty ``run_id`` and no pids (nothing ran for them).
A bailed child is ok, not a failure. Setting `cancel` (your own
`threading.Event`) from any thread cancels the whole batch the same way;
fail-fast sets that same event.

Results come back in item order. Extra keyword arguments go to every
`spawn` (e.g. ``code_paths``, ``timeout``, ``handlers``); a ``store`` is
deep-copied per item, so the children never share one dict.
"""
from __future__ import annotations

import copy
import threading
from typing import Any, Iterable

from sandbox.launcher.result import ERROR, RunResult

CANCELLED = "cancelled"


def cancelled_result() -> RunResult:
    return RunResult(run_id="", status=ERROR, reason=CANCELLED)


def run_parallel(launcher: Any, workflow: Any, items: Iterable[Any], *, concurrency: int = 4,
                 fail_fast: bool = True, grace: float = 2.0, policy: Any = None,
                 cancel: threading.Event | None = None, **spawn_kw: Any) -> list[RunResult]:
    """Run `workflow` once per item in separate sandboxes; list of RunResults in item order."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    from sandbox.launcher.launcher import _as_target
    mode, body = _as_target(workflow)          # parse once, fail before anything runs
    items = list(items)
    results: list[RunResult | None] = [None] * len(items)
    stop = cancel if cancel is not None else threading.Event()
    lock = threading.Lock()
    order = iter(range(len(items)))

    def worker() -> None:
        while True:
            with lock:
                i = next(order, None)
            if i is None or stop.is_set():
                return
            kw = dict(spawn_kw)
            if "store" in kw and kw["store"] is not None:
                kw["store"] = copy.deepcopy(kw["store"])
            try:
                r = launcher.spawn(body, policy=policy, item=items[i], index=i, cancel=stop,
                                   grace=grace, **kw)
            except Exception as exc:   # e.g. InputError for a bad policy: that item fails
                r = RunResult(run_id="", status=ERROR, reason=f"{type(exc).__name__}: {exc}")
            results[i] = r
            if fail_fast and not r.ok:
                stop.set()

    threads = [threading.Thread(target=worker, name=f"run_parallel-{n}", daemon=True)
               for n in range(min(concurrency, len(items)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r if r is not None else cancelled_result() for r in results]
