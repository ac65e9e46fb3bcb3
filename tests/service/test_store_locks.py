"""The service's store keeps SQLite's POSIX locks when a second Store of the same file
is made in the process (the admin API and `sandbox token`/`sandbox gc` code paths open
one each): its constructor opened and closed the file by name, and closing any
descriptor of a file drops every POSIX lock the process holds on it, SQLite's too
(the run history's case: tests/test_history_locks.py)."""
from __future__ import annotations

import os

from proc_locks import SHARED_FIRST, posix_locks
from sandbox.service.store import Store


def _read_locks(path: str) -> list[str]:
    return posix_locks(path, "READ", SHARED_FIRST)


def test_a_second_store_of_the_file_leaves_the_first_ones_lock(tmp_path):
    path = str(tmp_path / "service.db")
    first = Store(path)
    assert _read_locks(path), "a WAL connection holds SQLite's SHARED lock"
    second = Store(path)
    assert second.version == first.version
    assert _read_locks(path), "the second Store dropped the first one's lock"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_symlink_is_refused_and_a_loose_mode_is_tightened(tmp_path):
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    os.symlink(target, tmp_path / "link.db")
    try:
        Store(str(tmp_path / "link.db"))
        raise AssertionError("a symlinked store was opened")
    except OSError:
        pass
    loose = tmp_path / "loose.db"
    loose.write_bytes(b"")
    os.chmod(loose, 0o644)
    Store(str(loose))
    assert os.stat(loose).st_mode & 0o777 == 0o600
