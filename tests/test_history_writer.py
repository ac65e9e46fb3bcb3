"""The run history's writer connection (`History.record` keeps one open, so a run's
return path pays no WAL checkpoint): a database removed or replaced meanwhile is
written afresh, never to the old inode; a forked child never closes or uses the
parent's connection (tests/test_history_fork.py); `close` leaves everything
readable by a new connection."""
from __future__ import annotations

import os

from sandbox.history import History
from sandbox.launcher.result import RunResult


def _rec(h: History, run_id: str) -> None:
    h.record(RunResult(run_id=run_id), kind="exec", command="[]", own_output=False)


def test_records_are_visible_to_other_connections_at_once(tmp_path):
    h = History(str(tmp_path / "h" / "runs.sqlite"))
    _rec(h, "a" * 32)
    _rec(h, "b" * 32)
    other = History(h.path)          # as `sandbox runs list` in another process
    assert sorted(e.run_id for e in other.list()) == ["a" * 32, "b" * 32]
    h.close()
    assert len(other.list()) == 2


def test_a_removed_database_is_recreated_not_written_to_the_old_inode(tmp_path):
    h = History(str(tmp_path / "h" / "runs.sqlite"))
    _rec(h, "a" * 32)
    for name in os.listdir(tmp_path / "h"):
        os.unlink(tmp_path / "h" / name)
    _rec(h, "c" * 32)
    assert [e.run_id for e in History(h.path).list()] == ["c" * 32]
    assert os.stat(h.path).st_mode & 0o777 == 0o600


def test_a_forked_child_records_without_the_parents_connection(tmp_path):
    h = History(str(tmp_path / "h" / "runs.sqlite"))
    _rec(h, "a" * 32)
    parents = h._con
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _rec(h, "d" * 32)       # in a fresh interpreter (sandbox.history_proxy)
            code = 0 if h._con is parents else 3    # the inherited one neither used nor closed
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _rec(h, "e" * 32)                 # the parent's connection still works
    assert sorted(e.run_id for e in History(h.path).list()) == ["a" * 32, "d" * 32, "e" * 32]
