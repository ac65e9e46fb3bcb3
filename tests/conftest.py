"""Shared fixtures. Tests run as root and, in CI, again as an unprivileged user."""
from __future__ import annotations

import os
import sys

import pytest


def _as_an_interactive_caller() -> None:
    """The suite runs as a caller at a terminal would: no signal ignored or blocked
    but Python's own. A sandboxed program now keeps its caller's ignored signals and
    mask (`nohup` is honoured, probe 4), so a suite started under `nohup` (a CI job)
    handed SIG_IGN for SIGHUP to every program it ran, and the tests of default
    dispositions and of SIGHUP delivery failed. The tests of inheritance set their
    own dispositions explicitly."""
    import signal
    own = {signal.SIGPIPE, signal.SIGXFSZ}     # Python ignores these itself at start
    for sig in signal.valid_signals():
        if sig in own or sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


_as_an_interactive_caller()


def _hypothesis_examples_kept_where_writable() -> None:
    """Hypothesis keeps the examples that failed in `.hypothesis/` under the working
    directory. The unprivileged pass runs in a root-owned copy it cannot write, where
    every property test warned "database location unusable" (20 warnings in CI) and
    kept nothing: there they go under the user's own cache directory instead."""
    if os.access(os.getcwd(), os.W_OK):
        return
    from hypothesis import settings
    from hypothesis.database import DirectoryBasedExampleDatabase
    where = os.path.join(os.path.expanduser("~"), ".cache", "sandbox-tests", "hypothesis")
    settings.register_profile("read-only-checkout",
                              database=DirectoryBasedExampleDatabase(where))
    settings.load_profile("read-only-checkout")


_hypothesis_examples_kept_where_writable()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def pytest_collection_modifyitems(config, items):
    """Deselect (reported as deselected, never as passed) the tests whose markers
    SANDBOX_ROOT_ONLY_MARKERS names: scripts/test.sh sets it for the unprivileged
    pass, since suites needing a real browser (or server) run once, as root."""
    markers = set(os.environ.get("SANDBOX_ROOT_ONLY_MARKERS", "").split())
    if not markers:
        return
    kept, dropped = [], []
    for item in items:
        (dropped if markers & {m.name for m in item.iter_markers()} else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(autouse=True)
def _earlier_runs_directories_removed():
    """Earlier tests' run directories are removed by a shared thread (launcher/tidy.py),
    which holds a descriptor while it works: gone before a test counts its own."""
    from sandbox.launcher import tidy
    tidy.drain()
    yield


@pytest.fixture
def launcher():
    from sandbox.launcher.launcher import Launcher
    return Launcher(capture_output=True)


@pytest.fixture
def py() -> str:
    """The interpreter the launcher runs on; the built-in policies grant it via ${PYTHON}."""
    return sys.executable


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (to prove nothing was left behind)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return found
