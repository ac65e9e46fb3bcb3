"""Removing a finished run's private directory off the caller's return path.

A run's rundir (``/tmp/sandbox-<id>-*``, the launcher's mkdtemp) holds the
directory the sandbox's new root was mounted on and its private files. Its
removal waits in the kernel while the sandbox's mount namespace is torn down
(rmdir of a dentry that was a mountpoint there detaches those mounts and waits
for an RCU grace period): 1 to 11 ms per directory under load on the 2-core
machine, which every `spawn` paid after the run had ended.

Nothing reads a rundir once its run has ended (the work directory's changes are
exported before it is queued), so one shared thread per process removes them
in order. `drain` waits until every queued one is gone (`Launcher.close`, and
at interpreter exit): no run directory outlives a closed launcher.
"""
from __future__ import annotations

import atexit
import os
import queue
import shutil
import threading

_queue: "queue.Queue[str]" = queue.Queue()
_lock = threading.Lock()
_worker: threading.Thread | None = None
_pid = 0


def _work() -> None:
    while True:
        path = _queue.get()
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            _queue.task_done()


def remove_later(path: str) -> None:
    """Queue `path` (a run's own directory) for removal; removes it at once when no
    thread can be started (interpreter shutting down)."""
    global _worker, _pid
    with _lock:
        if _worker is None or _pid != os.getpid() or not _worker.is_alive():
            try:
                worker = threading.Thread(target=_work, name="sandbox-tidy", daemon=True)
                worker.start()
            except RuntimeError:
                shutil.rmtree(path, ignore_errors=True)
                return
            _worker, _pid = worker, os.getpid()
        _queue.put(path)


def drain() -> None:
    """Wait until every queued directory is removed (none queued: returns at once)."""
    with _lock:
        alive = _worker is not None and _pid == os.getpid() and _worker.is_alive()
    if not alive:
        return    # none started here (a forked child's copy is its parent's to remove)
    _queue.join()


atexit.register(drain)
