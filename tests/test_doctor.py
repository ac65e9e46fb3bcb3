"""`sandbox doctor`: real probes, as root and as an unprivileged user."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from sandbox import doctor
from sandbox.cli.main import main
from sandbox.monitor import cgroups

pytestmark = pytest.mark.isolation


@pytest.fixture(scope="module")
def report() -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--json"],
                          capture_output=True, text=True, check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_kernel_features_of_this_machine_are_found(report):
    rc, facts = report
    checks = facts["checks"]
    # This kernel (see the machine notes) offers all of them, to root and to other users.
    assert checks["user_namespaces"]["ok"] is True
    assert f"as uid {os.getuid()}" in checks["user_namespaces"]["detail"]
    assert checks["seccomp"]["ok"] is True
    assert checks["seccomp_notify"]["ok"] is True
    assert checks["landlock"]["ok"] is True and checks["landlock"]["data"]["abi"] >= 1
    assert checks["kernel"]["detail"].startswith(os.uname().release)
    assert facts["enforceable"] is True and facts["missing"] == []
    assert rc == 0


def test_cgroup_rows_agree_with_probe(report):
    _, facts = report
    sup = cgroups.probe()
    for ctrl in ("memory", "pids", "freezer"):
        row = facts["checks"][f"cgroup_{ctrl}"]
        s = sup.controllers[ctrl]
        assert row["ok"] == s.usable
        assert row["data"]["version"] == s.version
        assert row["data"]["base"] == s.base
        if not s.usable:
            assert row["detail"] == s.reason
    usable = [c for c in ("memory", "pids") if sup.controllers[c].usable]
    if not usable:
        assert "rlimits only" in facts["verdict"]
    elif len(usable) == 2:
        assert "use cgroups" in facts["verdict"]


def test_table_output_and_exit_code(capsys):
    rc = main(["doctor"])
    out = capsys.readouterr().out
    assert "user namespaces" in out and "Landlock" in out and "cgroup memory" in out
    assert out.rstrip().splitlines()[-1].startswith("verdict: the default policy can be enforced")
    assert rc == 0


def test_a_broken_probe_is_an_error_row(monkeypatch):
    def boom():
        raise RuntimeError("kaboom")
    probes = [(n, boom if n == "seccomp_notify" else f) for n, f in doctor.PROBES]
    monkeypatch.setattr(doctor, "PROBES", probes)
    facts = doctor.collect()
    row = facts["checks"]["seccomp_notify"]
    assert row["ok"] is None and row["detail"] == "error: RuntimeError: kaboom"
    assert facts["enforceable"] is True      # not required by the default policy
    assert "ERROR" in doctor.render(facts)


def test_missing_required_feature_exits_1(monkeypatch, capsys):
    probes = [(n, (lambda: doctor.Check("landlock", "Landlock", False, "unavailable",
                                        required=True)) if n == "landlock" else f)
              for n, f in doctor.PROBES]
    monkeypatch.setattr(doctor, "PROBES", probes)
    assert main(["doctor", "--json"]) == 1
    facts = json.loads(capsys.readouterr().out)
    assert facts["enforceable"] is False and facts["missing"] == ["landlock"]
    assert "can NOT be enforced" in facts["verdict"]


def test_failing_child_probe_reports_errno():
    def child(keep: int) -> str:
        raise PermissionError(1, "Operation not permitted")
    ok, detail = doctor._in_child(child)
    assert ok is False and "EPERM" in detail


@pytest.mark.parametrize("probe, module, name", [
    ("user_namespaces", "namespaces", "enter"),
    ("user_namespaces", "namespaces", "apply"),
    ("seccomp", "seccomp", "install"),
    ("seccomp_notify", "seccomp", "install"),
    ("landlock", "landlock", "apply"),
    ("no_new_privs", "privileges", "apply"),
])
def test_rows_come_from_the_real_layer_functions(monkeypatch, probe, module, name):
    """A layer that cannot apply turns its doctor row to "no": the probe runs the very
    function contain.SEQUENCE (or the stub) runs, not a copy of its system calls."""
    import importlib
    mod = importlib.import_module(f"sandbox.isolation.{module}")

    def broken(*args, **kwargs):
        raise OSError(errno.EPERM, f"{module}.{name} refused by the test")
    monkeypatch.setattr(mod, name, broken)       # the forked probe child inherits it
    fn = dict(doctor.PROBES)[probe]
    row = fn()
    assert row.ok is False, row
    assert f"{module}.{name} refused by the test" in row.detail or "EPERM" in row.detail
