"""The audit store's cap sweep keeps SQLite's POSIX locks of the runs its own process
writes (the monitor host writes every run of a launcher and sweeps the directory).

WHY: the sweep tells a live run by trying its flock on a descriptor of the file it
opens and closes; closing any descriptor of a file drops every POSIX lock the process
holds on it. When the file was one this process's writer was in a transaction on,
its RESERVED lock went with it: a reader (`sandbox audit`) could then take the
writer's journal for a hot one and play it back into the file under the writer.
"""
from __future__ import annotations

import os

from proc_locks import RESERVED_BYTE, posix_locks
from sandbox.audit import retention, store


def _write_locks(path: str) -> list[str]:
    """This process's write locks on SQLite's RESERVED byte of `path`."""
    return posix_locks(path, "WRITE", RESERVED_BYTE)


def test_the_sweep_leaves_the_locks_of_a_run_this_process_writes(tmp_path):
    directory = str(tmp_path / "audit")
    run = store.create_run(directory, "a" * 32, policy="p", files="f", mode="m", argv=None)
    try:
        run.conn.execute("BEGIN IMMEDIATE")          # the writer mid-transaction
        run.conn.execute("UPDATE runs SET records = 1")
        assert _write_locks(run.path), "SQLite holds RESERVED during the transaction"
        assert retention.enforce_cap(directory, cap=0) == 0    # the live run is kept
        assert _write_locks(run.path), "the sweep dropped the writer's lock"
        run.conn.execute("COMMIT")
    finally:
        run.close()
    assert os.path.exists(run.path)
