"""What a Python action's PID 2 asks the kernel for when it imports a module of the runtime.

Every file call of PID 2 is a seccomp notification the monitor answers and records
under an auditing policy (strict audits every file call), so each one the import
machinery need not make is a round trip to the monitor saved, in every run. The
audit still records every call that is made: these tests read the calls back from
the run's audit store.
"""
from __future__ import annotations

import importlib.util
import os
import struct

import pytest

import sandbox.audit
import sandbox.bench.actions as bench_actions
from sandbox.bench.spawn import _workflow
from sandbox.launcher.launcher import Launcher

pytestmark = pytest.mark.isolation

BENCH_DIR = os.path.dirname(os.path.abspath(bench_actions.__file__))
SOURCE = os.path.join(BENCH_DIR, "actions.py")


@pytest.fixture(scope="module")
def noop_records(tmp_path_factory):
    """The audit records of one warm no-op action under strict (the benchmark's run)."""
    db = str(tmp_path_factory.mktemp("audit"))
    with Launcher() as la:
        la.audit_db = db
        la.spawn(_workflow("bench.noop"), policy="strict")   # the pools are warm after it
        r = la.spawn(_workflow("bench.noop"), policy="strict")
    assert r.status == "ok", r.reason
    return list(sandbox.audit.records(r.run_id, db=db))


def _fresh_bytecode(source: str) -> str | None:
    """The source's .pyc when it holds a timestamp header matching the source, as
    CPython's SourceFileLoader checks it; else None."""
    pyc = importlib.util.cache_from_source(source)
    try:
        with open(pyc, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    st = os.stat(source)
    if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER:
        return None
    flags, mtime, size = struct.unpack("<III", head[4:16])
    if flags != 0 or mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF:
        return None
    return pyc


def test_the_runtime_directories_are_listed_once_in_the_template(noop_records):
    """PID 2 finds sandbox/bench through the template's warm finder: it lists no
    directory of the runtime (template.warm_finders). It still stats the directory
    (the finder's mtime check), and that call is recorded."""
    listings = [r for r in noop_records if r["syscall"] == "openat"
                and r["path"].rstrip("/") == BENCH_DIR]
    assert listings == [], "PID 2 listed the runtime's directory itself"
    assert [r for r in noop_records if r["syscall"] == "newfstatat" and r["path"] == BENCH_DIR]


def test_an_action_module_of_the_runtime_is_loaded_from_its_bytecode(noop_records):
    """The build byte-compiles the package (setup.py, build_native): a sandbox never
    writes bytecode, so without it every run compiled bench/actions.py from source."""
    pyc = _fresh_bytecode(SOURCE)
    assert pyc is not None, (f"no up-to-date bytecode for {SOURCE}: build the package "
                             "(pip install -e .), which byte-compiles it")
    opened = [r["path"] for r in noop_records if r["syscall"] in ("openat", "openat2")]
    assert pyc in opened
    assert SOURCE not in opened, "PID 2 read the source (and compiled it) beside fresh bytecode"


def test_the_built_in_middleware_s_child_half_is_in_the_template(tmp_path):
    """A run with HMAC and redaction middleware builds their child halves in PID 2
    (worker._install_middleware) from the template's modules: no file of the
    middleware package is looked up from inside the view (where a policy without the
    package's directory could not), and none is compiled there."""
    from sandbox.middleware import HmacAuth
    from sandbox.middleware.redact import Redactor
    db = str(tmp_path / "audit")
    with Launcher() as la:
        la.audit_db = db
        r = la.spawn(_workflow("bench.noop"), policy="strict",
                     middleware=[HmacAuth(), Redactor(["password"])])
    assert r.status == "ok", r.reason
    middleware_dir = os.path.join(os.path.dirname(BENCH_DIR), "middleware")
    looked_up = sorted({x["path"] for x in sandbox.audit.records(r.run_id, db=db)
                        if x["path"].startswith(middleware_dir)})
    assert looked_up == [], "PID 2 imported the middleware from inside the view"
