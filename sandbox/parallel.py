"""Parallel spawns: one sandboxed child per item, a concurrency limit, fail-fast.

    results = run_parallel(launcher, workflow, items, concurrency=4)

Each item runs in its own sandbox (``ctx.item`` / ``ctx.index`` in the
child), from a `concurrent.futures.ThreadPoolExecutor` of `concurrency`
workers calling the blocking, thread-safe `Launcher.spawn`.

With `fail_fast` (the default) the first result that is not ok sets the
shared cancel token: children still running are killed (the monitor SIGKILLs
the sandbox; if it has not within `grace` seconds, the monitor itself is
killed and PDEATHSIG takes the sandbox down) and end with status
"cancelled"; items not started yet also get status "cancelled", reason
"cancelled before it started", with an empty ``run_id`` and no pids (nothing
ran for them). A bailed child is ok, not a failure. Setting `cancel` (your
own `threading.Event`) from any thread cancels the whole batch the same way;
fail-fast sets that same event.

Results come back in item order. Extra keyword arguments go to every
`spawn` (e.g. ``code_paths``, ``timeout``, ``handlers``); a ``store`` is
deep-copied per item, so the children never share one dict.
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import threading
from typing import TYPE_CHECKING, Any, Iterable

from sandbox.launcher.result import ERROR, Status, RunResult

if TYPE_CHECKING:
    from sandbox.launcher.launcher import Launcher

NOT_STARTED = "cancelled before it started"


def cancelled_result() -> RunResult:
    return RunResult(run_id="", status=Status.CANCELLED, reason=NOT_STARTED)


def run_parallel(launcher: Launcher, workflow: Any, items: Iterable[Any], *,
                 concurrency: int = 4, fail_fast: bool = True, grace: float = 2.0,
                 policy: Any = None, cancel: threading.Event | None = None,
                 **spawn_kw: Any) -> list[RunResult]:
    """Run `workflow` once per item in separate sandboxes; list of RunResults in item order."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    from sandbox.launcher.target import classify
    _, body = classify(workflow)            # parse once, fail before anything runs
    items = list(items)
    stop = cancel if cancel is not None else threading.Event()

    def one(i: int) -> RunResult:
        if stop.is_set():
            return cancelled_result()
        kw = dict(spawn_kw)
        if kw.get("store") is not None:
            kw["store"] = copy.deepcopy(kw["store"])
        try:
            r = launcher.spawn(body, policy=policy, item=items[i], index=i, cancel=stop,
                               grace=grace, **kw)
        except Exception as exc:   # e.g. InputError for a bad policy: that item fails
            r = RunResult(run_id="", status=ERROR, reason=f"{type(exc).__name__}: {exc}")
        if fail_fast and not r.ok:
            stop.set()
        return r

    if not items:
        return []
    with cf.ThreadPoolExecutor(max_workers=min(concurrency, len(items)),
                               thread_name_prefix="run_parallel") as pool:
        futures = [pool.submit(one, i) for i in range(len(items))]
        return [f.result() for f in futures]
