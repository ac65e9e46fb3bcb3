"""The launcher never parses what a sandbox wrote (issue 11.2).

A nested request names the modules its workflow imports; the launcher's
pre-check used to find and `ast.parse` them in its own process: ~500x the
file's size in memory with the GIL held (2 MiB -> 1 GB), and a module name
starting with '/' turned the lookup into a path of the sandbox's choosing.
Judged from the launcher's /proc (peak RSS, VmHWM, of a fresh launcher
process) and from a bystander run started at the same time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings, strategies as st

from sandbox.errors import WorkflowError
from sandbox.workflow import source_scan, static_check
from sandbox.workflow.model import Workflow

ROOT = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(ROOT, "probes", "precheck_attack.py")
CODE = os.path.join(ROOT, "launcher")
MiB = 1 << 20


def _attack(tmp_path, module: str, code_paths: list[str]) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(tmp_path, 0o755)
    proc = subprocess.run([sys.executable, PROBE, ":".join(code_paths), module,
                           str(2 * MiB), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.isolation
def test_planted_module_on_the_path_is_not_parsed_by_the_launcher(tmp_path):
    """A directory the policy lets the sandbox write is on the code path, and the
    action plants 2 MiB of Python there. Before: the launcher grew by ~800 MB. Now the source is over the
    worker's size bound, so it is left to the nested child (which runs it under
    its own limits and reports the unknown action)."""
    got = _attack(tmp_path, "planted", [str(tmp_path / "out"), CODE])
    assert got["status"] == "ok", got
    assert got["child"]["status"] == "error", got           # decided inside the child
    assert got["grown"] < 64 * MiB, got
    assert got["bystander"] == "ok", got


@pytest.mark.isolation
def test_path_as_module_name_is_refused(tmp_path):
    got = _attack(tmp_path, "{dir}/planted", [CODE])
    assert got["status"] == "ok", got
    assert "not a dotted Python identifier" in got["child"]["reason"], got
    assert got["grown"] < 64 * MiB, got
    assert got["bystander"] == "ok", got


def _wf(imports=(), actions=("x",)) -> Workflow:
    return Workflow.from_dict({"name": "w", "imports": list(imports),
                               "stages": [{"id": "s", "actions": list(actions)}]})


@pytest.mark.parametrize("name", ["/etc/passwd", "a..b", ".a", "a.", "a/b", "class",
                                  "a.b-c", "../x", "a." * 200 + "a"])
def test_bad_module_names_are_refused(name):
    with pytest.raises(WorkflowError, match="not a dotted Python identifier"):
        static_check.check_actions(_wf(imports=[name]))
    with pytest.raises(WorkflowError, match="not a dotted Python identifier"):
        static_check.check_actions(_wf(actions=[f"{name}:f"]))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab_./\\-: 1é\x00")), max_size=12))
def test_every_module_name_is_a_dotted_identifier_or_refused(name):
    """No name reaches the file system unless every part is an identifier."""
    try:
        static_check._check_module_name(name, "t")
    except WorkflowError:
        return
    parts = name.split(".")
    assert all(p.isidentifier() for p in parts) and "/" not in name and "\x00" not in name


def test_worker_reads_names_and_refuses_what_it_cannot_bound(tmp_path):
    good = tmp_path / "good_mod.py"
    good.write_text("from sandbox.workflow import action\n"
                    "@action('named')\ndef f(ctx): pass\n"
                    "class C:\n    def m(self): pass\n")
    got = static_check._scan(str(good))
    assert got.readable and got.registered == {"named"} and {"f", "C", "C.m"} <= got.defined
    big = tmp_path / "big_mod.py"
    big.write_bytes(b"a = 1\n" * (source_scan.MAX_SOURCE // 6 + 1))
    assert not static_check._scan(str(big)).readable          # refused by size, unread
    bad = tmp_path / "bad_mod.py"
    bad.write_text("def (:\n")
    assert not static_check._scan(str(bad)).readable
    fifo = tmp_path / "fifo_mod.py"
    os.mkfifo(fifo)
    done = threading.Event()
    threading.Thread(target=lambda: (static_check._scan(str(fifo)), done.set()),
                     daemon=True).start()
    assert done.wait(60), "a FIFO under a .py name blocked the scan"
    assert not static_check._scan(str(fifo)).readable



def test_one_check_parses_a_bounded_amount_of_source(tmp_path, monkeypatch):
    """Forty uploaded modules of 512 KiB, listed in `imports`, took 24 s of the
    server's CPU to parse before the run was refused. One check now parses at most
    MAX_SCANNED bytes in all; past that a module is unread, so the check refuses
    nothing and the child decides, inside its limits."""
    size = 400 << 10
    names = [f"bulk{i}" for i in range(8)]
    for n in names:
        (tmp_path / f"{n}.py").write_text("# filler\n" * (size // 9))
    parsed: list[str] = []
    real = static_check._run_worker
    monkeypatch.setattr(static_check, "_run_worker",
                        lambda src: parsed.append(src) or real(src))
    static_check._SCANNED.clear()
    static_check.check_actions(_wf(imports=names, actions=["nowhere"]), [str(tmp_path)])
    assert len(parsed) == static_check.MAX_SCANNED // size < len(names)


def _small_stdlib_modules(n: int) -> list[str]:
    """`n` distinct standard-library modules, smallest sources first (no worker is
    needed to find them: they exist on every child's path)."""
    found: list[tuple[int, str]] = []
    for base in static_check.child_base_path():
        if "site-packages" in base or not base.startswith(sys.base_prefix):
            continue
        for root, _dirs, files in os.walk(base):
            for f in files:
                if not f.endswith(".py") or f == "__init__.py":
                    continue
                rel = os.path.relpath(os.path.join(root, f), base)[:-3].split(os.sep)
                if all(p.isidentifier() for p in rel) and "test" not in rel[0]:
                    found.append((os.path.getsize(os.path.join(root, f)), ".".join(rel)))
    names = [m for _, m in sorted(found)]
    assert len(names) >= n
    return names[:n]


def _counting_workers(monkeypatch) -> list[str]:
    parsed: list[str] = []
    real = static_check._run_worker
    monkeypatch.setattr(static_check, "_run_worker",
                        lambda src: parsed.append(src) or real(src))
    static_check._SCANNED.clear()
    return parsed


def test_one_check_starts_a_bounded_number_of_workers(monkeypatch):
    """Small modules fit the byte budget by the hundred: 672 standard-library modules
    were 672 worker interpreters (~30 s of the launcher's host, 17 s of CPU) for one
    nested request. One check now starts at most MAX_WORKERS; the rest are unread,
    so the check refuses nothing and the child decides."""
    parsed = _counting_workers(monkeypatch)
    names = _small_stdlib_modules(200)
    static_check.check_actions(_wf(imports=names, actions=["nowhere"]))
    assert 0 < len(parsed) <= static_check.MAX_WORKERS


def test_one_module_named_many_times_is_looked_up_once(monkeypatch):
    looked: list[str] = []
    real = static_check.find_source
    monkeypatch.setattr(static_check, "find_source",
                        lambda m, path: looked.append(m) or real(m, path))
    static_check.check_actions(_wf(actions=["json:dumps"] * 5000))
    assert looked == ["json"]


@pytest.mark.isolation
def test_a_nested_request_naming_many_modules_costs_few_workers(monkeypatch):
    """End to end: the action asks for a nested spawn importing 200 standard-library
    modules; the launcher (this process) serves it."""
    from sandbox.launcher.launcher import Launcher
    parsed = _counting_workers(monkeypatch)
    wf = {"name": "attack", "imports": ["plant_actions"],
          "stages": [{"id": "s", "actions": [{"name": "plant.nest_imports", "params": {
              "imports": _small_stdlib_modules(200)}}]}]}
    r = Launcher(capture_output=True).spawn(wf, code_paths=[CODE])
    assert r.status == "ok", (r.status, r.reason)
    assert r.store["child"]["status"] in ("ok", "error"), r.store
    plant = [p for p in parsed if p.endswith("plant_actions.py")]
    assert len(parsed) - len(plant) <= static_check.MAX_WORKERS, len(parsed)


@pytest.mark.isolation
def test_the_nested_requests_of_one_run_share_a_bound_on_workers(monkeypatch):
    """Each request's check is bounded (MAX_WORKERS), but a run may send 256 of them:
    20 requests naming 8 fresh modules each were 160 workers, 256 would be 2,048
    (~60 s of the launcher's CPU) for a child that spent nothing. The requests of one
    run now share MAX_WORKERS_PER_RUN."""
    from sandbox.launcher.launcher import Launcher
    parsed = _counting_workers(monkeypatch)
    names = _small_stdlib_modules(160)
    batches = [names[i:i + 8] for i in range(0, 160, 8)]
    wf = {"name": "attack", "imports": ["plant_actions"],
          "stages": [{"id": "s", "actions": [{"name": "plant.nest_many", "params": {
              "batches": batches}}]}]}
    r = Launcher(capture_output=True).spawn(wf, code_paths=[CODE])
    assert r.status == "ok", (r.status, r.reason)
    assert len(r.store["statuses"]) == 20
    nested = [p for p in parsed if not p.endswith("plant_actions.py")]
    assert len(nested) <= static_check.MAX_WORKERS_PER_RUN < 160, len(nested)
