"""A run's private directory is removed off the caller's return path (launcher/tidy.py),
and none outlives `Launcher.close()`."""
from __future__ import annotations

import glob
import os
import tempfile

import pytest

from sandbox.launcher import tidy
from sandbox.launcher.launcher import Launcher


def _rundirs(run_id: str) -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), f"sandbox-{run_id[:12]}-*"))


def test_drain_waits_for_every_queued_directory(tmp_path):
    dirs = []
    for i in range(20):
        d = tmp_path / f"run{i}" / "root" / "etc"
        d.mkdir(parents=True)
        (d / "passwd").write_text("x")
        dirs.append(tmp_path / f"run{i}")
        tidy.remove_later(str(dirs[-1]))
    tidy.drain()
    assert [d for d in dirs if d.exists()] == []


@pytest.mark.isolation
def test_no_run_directory_outlives_a_closed_launcher():
    la = Launcher(capture_output=True, history=False)
    try:
        results = [la.spawn(["true"], policy="strict") for _ in range(3)]
    finally:
        la.close()
    assert all(r.ok for r in results), [(r.status, r.reason) for r in results]
    assert [d for r in results for d in _rundirs(r.run_id)] == []
