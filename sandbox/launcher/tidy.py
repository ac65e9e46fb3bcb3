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

A launcher that is killed (SIGKILL, OOM, a killed `sandbox exec` or daemon fork)
removes nothing: such directories piled up in /tmp (10-20 per test-suite run
here). So each rundir holds an owner lock (`OWNER`), made under a temporary name,
`flock`ed by its launcher and renamed into place, held until its removal; and the
first removal thread of a process (or the `sandbox exec` daemon, once, at its
start) sweeps the caller's temporary directory: a `sandbox-*` directory of the
caller's whose owner lock it can take belongs to a launcher that is gone, and is
removed. One without the lock (an older version's, or one being made) is left.
"""
from __future__ import annotations

import atexit
import fcntl
import os
import queue
import shutil
import stat
import tempfile
import threading

from sandbox.isolation import beneath

PREFIX = "sandbox-"     # prepare.make_paths: sandbox-<run id>-<random>
OWNER = ".owner"        # the owner lock in each rundir

_queue: "queue.Queue[tuple[str, int]]" = queue.Queue()
_lock = threading.Lock()
_worker: threading.Thread | None = None
_pid = 0
_swept = False          # inherited by forks: the daemon's forks do not sweep again
_held: list[tuple[str, int]] | None = None   # `hold`: removals for `drain`, no thread
_held_pid = 0
_trash_swept = False    # discard_empty_run's first use in this process


def own(rundir: str) -> int:
    """In a new rundir: its owner lock, locked, under its final name; the descriptor to
    hold until the directory is removed (`remove_later`)."""
    tmp = os.path.join(rundir, OWNER + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, os.path.join(rundir, OWNER))
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep(where: str | None = None) -> list[str]:
    """Remove the caller's rundirs in `where` (the temporary directory) whose owner is
    gone: their owner lock can be taken. Returns their names. Never follows a link;
    leaves what is not the caller's, or has no owner lock."""
    removed: list[str] = []
    try:
        top = os.open(where or tempfile.gettempdir(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return removed
    try:
        for name in os.listdir(top):
            if name.startswith(PREFIX) and _stale(top, name):
                shutil.rmtree(name, ignore_errors=True, dir_fd=top)
                removed.append(name)
    except OSError:
        pass
    finally:
        os.close(top)
    return removed


def _stale(top: int, name: str) -> bool:
    try:
        d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=top)
    except OSError:
        return False
    try:
        if os.fstat(d).st_uid != os.geteuid():
            return False
        lock = os.open(OWNER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
    except OSError:
        return False
    finally:
        os.close(d)
    try:
        st = os.fstat(lock)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True     # (released as it closes: the directory goes next)
    except OSError:
        return False    # held: its launcher is alive
    finally:
        os.close(lock)


def sweep_once() -> None:
    """`sweep`, once per process and its forks."""
    global _swept
    if not _swept:
        _swept = True
        sweep()


def remove_now(path: str, owner: int) -> None:
    """Remove a run's directory, then let go of its owner lock (`own`)."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        if owner >= 0:
            os.close(owner)


def _work() -> None:
    sweep_once()
    while True:
        path, owner = _queue.get()
        try:
            remove_now(path, owner)
        finally:
            _queue.task_done()


def hold() -> None:
    """In a process that answers its caller, then ends (the `sandbox exec` daemon's fork,
    sandbox/thin/relay.py): removals wait for `drain`, which makes them in this thread
    after the answer. No thread is started: starting one in the fork, and its removals
    running beside the run's last steps, delayed the answer."""
    global _held, _held_pid
    _held, _held_pid = [], os.getpid()


def remove_later(path: str, owner: int = -1) -> None:
    """Queue `path` (a run's own directory) for removal, then the closing of its owner
    lock `owner`; removes it at once when no thread can be started (interpreter
    shutting down)."""
    global _worker, _pid
    if _held is not None and _held_pid == os.getpid():
        _held.append((path, owner))
        return
    with _lock:
        if _worker is None or _pid != os.getpid() or not _worker.is_alive():
            try:
                worker = threading.Thread(target=_work, name="sandbox-tidy", daemon=True)
                worker.start()
            except RuntimeError:
                remove_now(path, owner)
                return
            _worker, _pid = worker, os.getpid()
        _queue.put((path, owner))


def drain() -> None:
    """Wait until every queued directory is removed (none queued: returns at once)."""
    if _held is not None and _held_pid == os.getpid():
        sweep_once()
        while _held:
            remove_now(*_held.pop(0))
        return
    with _lock:
        alive = _worker is not None and _pid == os.getpid() and _worker.is_alive()
    if not alive:
        return    # none started here (a forked child's copy is its parent's to remove)
    _queue.join()


atexit.register(drain)


TRASH = "trash"         # <state>/trash: empty run directories on their way out
_trash_fds: dict[str, int] = {}   # trash path -> its descriptor, kept (`_trash_fd`)


def discard_empty_run(output: str, runs: str, empties: tuple[str, ...] = ()) -> bool:
    """Remove a run's own output directory, left empty, off the return path: when
    `output` (``<runs>/<run id>/output``) holds nothing but `empties` (names of an empty
    directory or empty file the launcher made there), its run directory is renamed into
    ``<state>/trash`` in one step and the thread removes it. True when done; False
    (nothing changed) when there is anything else, or the rename cannot be made: the
    caller then removes what it must in place, as before.

    Why: the output directory, and the copy-on-write layer's ``workdir.changes`` in it,
    are mountpoints in the sandbox's mount namespace, which may not be gone yet when the
    report is in; an rmdir of one waits for the kernel to detach the mount (0.2-0.7 ms
    a directory here, four per empty strict run: the whole run directory is gone from
    `runs` at once all the same)."""
    run_dir = os.path.dirname(output)
    if os.path.dirname(run_dir) != runs \
            or not _empty_run(run_dir, os.path.basename(output), empties):
        return False
    fd = _trash_fd(os.path.join(os.path.dirname(runs), TRASH))
    name = os.path.basename(run_dir)
    try:
        if fd < 0:
            return False
        os.rename(run_dir, name, dst_dir_fd=fd)
    except OSError:
        return False
    # Removed through the kept descriptor: a link planted as `trash` later (a sandbox
    # whose grants reach the state directory) cannot send the removal elsewhere.
    here = f"/proc/self/fd/{fd}"
    global _trash_swept
    if not _trash_swept:    # once per process: what a launcher killed meanwhile left there
        _trash_swept = True
        try:
            for left in os.listdir(fd):
                if left != name:
                    remove_later(os.path.join(here, left))
        except OSError:
            pass
    remove_later(os.path.join(here, name))
    return True


def _trash_fd(trash: str) -> int:
    """`trash` opened without following a link (made, 0700, when missing) and kept open
    for the process, if it is a directory of the caller's that no one else may write;
    else -1."""
    fd = _trash_fds.get(trash, -1)
    if fd >= 0:
        return fd
    try:
        try:
            os.mkdir(trash, 0o700)     # in the private state directory, next to `runs`
        except FileExistsError:
            pass
        fd = beneath.open_dir(trash)
    except OSError:
        return -1
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        return -1
    _trash_fds[trash] = fd
    return fd


def _empty_run(run_dir: str, output: str, empties: tuple[str, ...]) -> bool:
    """Is `output` the one entry of `run_dir` (anything else someone put beside it stays
    where it is, with its run directory), holding nothing but `empties`, each an empty
    directory or an empty regular file? Opened without following any link."""
    try:
        top = beneath.open_dir(run_dir)
    except OSError:
        return False
    try:
        if os.listdir(top) != [output]:
            return False
        out = beneath.open_dir(output, top)
        try:
            for name in os.listdir(out):
                if name not in empties:
                    return False
                st = os.stat(name, dir_fd=out, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    sub = beneath.open_dir(name, out)
                    try:
                        if os.listdir(sub):
                            return False
                    finally:
                        os.close(sub)
                elif not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
                    return False
        finally:
            os.close(out)
        return True
    except OSError:
        return False
    finally:
        os.close(top)


_stale_cleaned = False


def clean_stale_cgroups() -> None:
    """Once per process: remove cgroups left by a launcher that crashed (every
    `Launcher()` calls it; the `sandbox exec` daemon once, before its forks)."""
    global _stale_cleaned
    if _stale_cleaned:
        return
    _stale_cleaned = True
    try:
        from sandbox.monitor import cgroups
        cgroups.cleanup_stale(cgroups.probe_cached())
    except Exception:  # never let housekeeping stop a run
        pass
