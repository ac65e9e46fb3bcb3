"""Learned policies and the audit CLI."""
from __future__ import annotations

import json
import os
import re
from dataclasses import replace

import pytest

from sandbox.audit.suggest import collapse, needed
from sandbox.cli.main import main as cli
from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy


def test_collapse_deepest_first_never_system_dirs():
    v = {"OUTPUT": "/srv/run/out"}
    files = [f"/usr/lib/x/{i}.py" for i in range(3)] + ["/usr/lib/y/a.py", "/etc/hosts"]
    assert collapse(files, 3, v) == ["/etc/hosts", "/usr/lib/x", "/usr/lib/y/a.py"]
    assert collapse([f"/usr/lib/{c}" for c in "abcdef"], 3, v) == \
        [f"/usr/lib/{c}" for c in "abcdef"]                      # never /usr/lib
    assert collapse(["/data/a/1", "/data/a/2", "/data/b/1"], 3, v) == \
        ["/data/a/1", "/data/a/2", "/data/b/1"]                  # 2 < 3 under /data/a
    assert collapse(["/srv/run/out/1", "/srv/run/x", "/srv/run/y"], 3, v) == \
        ["/srv/run/out/1", "/srv/run/x", "/srv/run/y"]           # not above ${OUTPUT}


def test_needed_ignores_denied_metadata_and_sandbox_areas():
    recs = [{"verdict": "allowed", "operation": "read", "path": "/d/a"},
            {"verdict": "denied", "operation": "read", "path": "/etc/shadow"},
            {"verdict": "allowed", "operation": "metadata", "path": "/x"},
            {"verdict": "allowed", "operation": "read", "path": "/proc/self/status",
             "rule": "sandbox: /proc"},
            {"verdict": "allowed", "operation": "create", "path": "/o/new"},
            {"verdict": "allowed", "operation": "read", "path": "/o/new"}]
    assert needed(recs) == {"read": {"/d/a"}, "exec": set(), "write": {"/o"}}


PROGRAM = r"""
import os, sys
extra, out = sys.argv[1], os.environ["SANDBOX_OUTPUT"]
total = sum(len(open(os.path.join(extra, n)).read()) for n in sorted(os.listdir(extra)))
open(os.path.join(out, "result.txt"), "w").write(str(total))
print(total)
"""


@pytest.mark.isolation
def test_suggested_policy_runs_the_program_and_one_rule_less_fails(tmp_path, py, monkeypatch):
    from sandbox.launcher.launcher import Launcher
    db = str(tmp_path / "audit")
    monkeypatch.setenv("SANDBOX_AUDIT_DB", db)
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(4):
        (extra / f"f{i}.txt").write_text("x" * (i + 1))
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    learn = load_policy("default").replace(audit=AuditPolicy(files="all"))
    learn = learn.replace(filesystem=replace(learn.filesystem,
                                             read=learn.filesystem.read + (str(extra),)))
    la = Launcher(capture_output=True)
    argv = [py, "-I", "-c", PROGRAM, str(extra)]
    r = la.spawn(argv, policy=learn, workdir=str(work), output_dir=str(out))   # new and empty
    assert r.status == "ok" and r.stdout == "10\n", r.stderr
    toml_path = tmp_path / "suggested.toml"
    assert cli(["policy", "suggest", r.run_id[:12], "-o", str(toml_path)]) == 0
    text = toml_path.read_text()
    assert 'extends = ["base"]' in text and json.dumps(str(extra)) in text
    assert '"${OUTPUT}"' in text and "/usr" not in text
    # the launcher's own deny of the audit store (no sandbox sees it) is not the run's policy
    assert os.path.realpath(db) not in text
    ok = la.spawn(argv, policy=str(toml_path), workdir=str(work), output_dir=str(out) + "2")
    assert ok.status == "ok" and ok.stdout == "10\n", (ok.reason, ok.stderr)
    for needed_rule in (json.dumps(str(extra)), '"${OUTPUT}"'):
        less = tmp_path / "less.toml"
        less.write_text(re.sub(r"\n\s*" + re.escape(needed_rule) + ",", "", text))
        assert needed_rule not in less.read_text()
        bad = la.spawn(argv, policy=str(less), workdir=str(work),
                       output_dir=str(out) + needed_rule.strip('"${}/').replace("/", "_"))
        assert bad.status == "error" and re.search(r"(PermissionError|FileNotFoundError)", bad.stderr), needed_rule


@pytest.mark.isolation
def test_a_suggestion_from_a_copy_on_write_run_loads_and_keeps_the_host_tree(
        tmp_path, monkeypatch):
    """Learned under `default` (a copy-on-write work directory), a suggestion granted
    write = ["${WORKDIR}"] beside workdir = "copy-on-write", which the loader refuses
    (found by a new-user probe), and reset output_size/output_inodes to the built-in
    defaults. It loads now, writes the run's own layer, and keeps the run's sizes."""
    from sandbox.launcher.launcher import Launcher
    monkeypatch.setenv("SANDBOX_AUDIT_DB", str(tmp_path / "audit"))
    work = tmp_path / "work"
    work.mkdir()
    learn = load_policy("default").replace(audit=AuditPolicy(files="all"))
    la = Launcher(capture_output=True)
    argv = ["sh", "-c", "echo hi > newfile && cat newfile"]
    r = la.spawn(argv, policy=learn, workdir=str(work), output_dir=str(tmp_path / "o1"))
    assert r.status == "ok" and r.stdout == "hi\n", r.stderr
    path = tmp_path / "suggested.toml"
    assert cli(["policy", "suggest", r.run_id[:12], "-o", str(path)]) == 0
    text = path.read_text()
    write = re.search(r"\nwrite = \[(.*?)\]", text, re.S)
    assert write and "WORKDIR" not in write.group(1) and 'workdir = "copy-on-write"' in text
    assert f'output_size = "{learn.filesystem.output_size // (1 << 30)}GiB"' in text
    again = la.spawn(argv, policy=str(path), workdir=str(work), output_dir=str(tmp_path / "o2"))
    assert again.status == "ok" and again.stdout == "hi\n", (again.reason, again.stderr)
    assert os.listdir(work) == []          # the host's tree: never written


@pytest.mark.isolation
def test_audit_cli_list_show_summary(tmp_path, py, monkeypatch, capsys):
    from sandbox.launcher.launcher import Launcher
    monkeypatch.setenv("SANDBOX_AUDIT_DB", str(tmp_path / "audit"))
    pol = load_policy("default").replace(audit=AuditPolicy(files="all"))
    code = "open('/etc/hostname').read()\ntry: open('/etc/shadow')\nexcept OSError: pass"
    r = Launcher(capture_output=True).spawn([py, "-I", "-c", code], policy=pol)
    capsys.readouterr()
    assert cli(["audit", "list"]) == 0
    assert r.run_id in capsys.readouterr().out
    assert cli(["audit"]) == 0   # `sandbox audit` alone lists
    assert r.run_id in capsys.readouterr().out
    assert cli(["audit", "show", r.run_id[:8], "--denied"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "DENY" in lines[0] and "/etc/shadow" in lines[0] \
        and "filesystem.deny: /etc/shadow*" in lines[0]
    assert cli(["audit", "show", r.run_id, "--json"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(recs) == r.audit["stored"] and sum(x["count"] for x in recs) == r.audit["records"]
    assert cli(["audit", "summary", r.run_id, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["by_verdict"]["denied"] == 1 and s["top_denied"][0]["path"] == "/etc/shadow"
    assert cli(["audit", "show", "no-such-run"]) == 2
    # --db before the action or after it, the one given after it winning
    monkeypatch.delenv("SANDBOX_AUDIT_DB")
    store = str(tmp_path / "audit")
    for args in (["audit", "--db", store, "summary", r.run_id],
                 ["audit", "summary", r.run_id, "--db", store],
                 ["audit", "--db", str(tmp_path / "none"), "summary", r.run_id, "--db", store]):
        assert cli(args) == 0, args
        assert "/etc/shadow" in capsys.readouterr().out
    assert cli(["audit", "list", "--db", str(tmp_path / "none")]) == 2
    monkeypatch.setenv("SANDBOX_AUDIT_DB", store)
    jl = tmp_path / "x.jsonl"
    assert cli(["exec", "--policy", "default", "--audit-log", str(jl), "--", "/bin/true"]) in (0,)
    assert jl.exists()


def test_a_suggestion_names_the_connections_no_network_refused():
    """Refused connects are never granted (as refused files are not), but named."""
    from sandbox.audit.suggest import NOTE_TARGETS, suggest
    refused = [{"verdict": "denied", "operation": "connect", "path": f"10.0.0.{i}:443",
                "rule": "network.none: the sandbox has no network", "syscall": "connect"}
               for i in range(NOTE_TARGETS + 3)]
    reads = [{"verdict": "allowed", "operation": "read", "path": "/srv/data/a"}]
    text, _ = suggest(reads + refused + refused[:2], workdir="/w", output="/o",
                      learning=load_policy("strict"))
    assert "# The run tried to reach the network" in text
    named = re.findall(r"^#   (10\.0\.0\.\d+:443)$", text, re.M)
    assert named == [f"10.0.0.{i}:443" for i in range(NOTE_TARGETS)]
    assert "#   ... and 3 more" in text
    assert 'mode = "none"' in text.split("[network]", 1)[1]      # nothing granted
    quiet, _ = suggest(reads, workdir="/w", output="/o", learning=load_policy("strict"))
    assert "reach the network" not in quiet
