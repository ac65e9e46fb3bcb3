"""Strings the sandboxed program chose never reach the caller's terminal raw (issue 10, finding 12).

Judged from the host: what `sandbox audit show/list/summary` and `sandbox exec`
print holds no control character (ESC, CR, BEL, C1, bidi overrides), whatever
bytes the program put in a path or a name, and two different inputs never
print the same.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from sandbox.printable import as_bytes, from_bytes, json_text, printable

HOSTILE = [b"\x1b]0;pwned\x07", b"\x1b[2J\x1b[H", b"line\rOVER", b"bell\x07", b"\xc2\x9b31m",
           b"\x9b", b"\xff\xfe", b"rtl\xe2\x80\xaeexe.txt", b"tab\there", b"nl\nnext",
           b"back\\slash", b"\xed\xa0\x80"]


def clean(text: str) -> bool:
    """Only printable characters (and plain spaces): nothing a terminal acts on."""
    return all(ch == " " or (ch.isprintable() and unicodedata.category(ch)[0] != "C")
               for ch in text)


@pytest.mark.parametrize("raw", HOSTILE, ids=[repr(h)[2:-1] for h in HOSTILE])
def test_printable_escapes_every_control(raw):
    out = printable(raw)
    assert clean(out), out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "\x9b" not in out


def test_printable_renders_known_forms():
    assert printable(b"\x1b[31mred") == "\\u001b[31mred"
    assert printable(b"\xff/x") == "\\xff/x"
    assert printable("\u009b") == "\\u009b"           # C1 CSI as a code point
    assert printable(b"\xc2\x9b") == "\\u009b"        # ... and as its UTF-8 bytes
    assert printable("a\\b") == "a\\\\b"
    assert printable("/usr/lib/ok é") == "/usr/lib/ok é"
    assert printable(None) == ""


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_printable_is_clean_and_unambiguous(a, b):
    pa, pb = printable(a), printable(b)
    assert clean(pa) and clean(pb)
    if a != b:
        assert pa != pb


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_bytes_round_trip_and_json_is_lossless(raw):
    s = from_bytes(raw)
    assert as_bytes(s) == raw
    text, hexed = json_text(s)
    json.dumps(text, ensure_ascii=False).encode("utf-8")       # always valid UTF-8 JSON
    assert (bytes.fromhex(hexed) if hexed is not None else text.encode()) == raw


# -- end to end: a program's paths through the audit CLI, and exec's error line ---------------
@pytest.mark.isolation
def test_audit_cli_never_prints_the_programs_escapes(tmp_path, py, monkeypatch):
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    from sandbox.policy.model import AuditPolicy
    store = tmp_path / "audit"
    monkeypatch.setenv("SANDBOX_AUDIT_DB", str(store))
    names = [b"/etc/" + h for h in HOSTILE if b"/" not in h]
    code = ("import os, sys\n"
            "for n in sys.argv[1:]:\n"
            "    p = bytes.fromhex(n)\n"
            "    try: os.open(p, os.O_RDONLY)\n"
            "    except OSError: pass\n"
            "    try: os.open(p, os.O_WRONLY | os.O_CREAT)\n"
            "    except OSError: pass\n")
    pol = load_policy("default").replace(audit=AuditPolicy(files="all"))
    r = Launcher(capture_output=True).spawn([py, "-I", "-c", code, *[n.hex() for n in names]],
                                            policy=pol)
    assert r.status == "ok", (r.reason, r.stderr)
    assert r.audit["dropped"] == 0 and r.audit.get("db_error") is None, r.audit
    json.dumps(r.to_dict(), ensure_ascii=False).encode("utf-8")   # the result is valid JSON
    env = {**os.environ, "SANDBOX_AUDIT_DB": str(store)}
    outputs = {}
    for args in (["audit", "list"], ["audit", "show", r.run_id], ["audit", "show", r.run_id,
                 "--denied"], ["audit", "summary", r.run_id, "--top", "100"]):
        p = subprocess.run([sys.executable, "-m", "sandbox", *args], env=env,
                           capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        text = p.stdout.decode("utf-8")
        for line in text.splitlines():
            assert clean(line), (args, line)
        outputs[" ".join(args[:2])] = text
    shown = outputs["audit show"]
    for n in names:                      # every hostile name is there, escaped
        assert printable(n) in shown, printable(n)
    # JSON output: valid UTF-8, and the exact bytes come back
    p = subprocess.run([sys.executable, "-m", "sandbox", "audit", "show", r.run_id, "--json"],
                       env=env, capture_output=True, timeout=120, check=True)
    got = set()
    for line in p.stdout.decode("utf-8").splitlines():
        assert clean(line), line         # ASCII: a C1 CSI or a bidi override is escaped too
        rec = json.loads(line)
        got.add(bytes.fromhex(rec["path_hex"]) if "path_hex" in rec else rec["path"].encode())
    assert set(names) <= got


def test_run_summary_and_error_line_are_printable(tmp_path):
    """`sandbox run` prints the action's exception message (the program's text)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", "tests/probes/hostile_error.json"],
                       cwd=root, capture_output=True, timeout=120,
                       env={**os.environ, "SANDBOX_HOME": str(tmp_path / "state")})
    out = p.stdout.decode("utf-8") + p.stderr.decode("utf-8")
    assert "pwned" in out, out                       # the message is shown ...
    for line in out.splitlines():
        assert clean(line), line                     # ... and nothing in it acts on the terminal
    assert "\\u001b]0;pwned\\u0007" in out and "\\u202eexe.txt" in out


HOSTILE_LOGS = r"""
import json, os, struct
fd = int(os.environ["SANDBOX_IPC_FD"])
def send(t, p):
    b = json.dumps({"type": t, "payload": p}).encode()
    os.write(fd, struct.pack(">I", len(b)) + b)
bad = "\x1b]0;pwned\x07\x1b[2J\u009b\rOVER \u202eexe.txt"
send("log", {"level": "info" + bad, "message": "said" + bad, "action": "act" + bad,
             "stage": bad})
"""


def test_the_run_history_never_prints_the_programs_escapes(tmp_path):
    """`sandbox runs show/logs/list` print what a run's program chose (its log records
    sent over the IPC descriptor, an action's exception message as the reason): raw
    before (found by an attack probe, 2026-12-07), where `sandbox run` printed them
    escaped. The program's own stdout and stderr pass as they are, as with exec."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "state"), "SANDBOX_DAEMON": "0"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=root, env=env,
                              capture_output=True, timeout=120)

    assert cli("exec", "--policy", "strict", "--", "python3", "-c", HOSTILE_LOGS).returncode == 0
    logged = cli("runs", "list", "-q", "-n", "1").stdout.decode().strip()
    assert cli("run", "tests/probes/hostile_error.json").returncode != 0
    raised = cli("runs", "list", "-q", "-n", "1").stdout.decode().strip()
    for args in (["runs", "logs", logged], ["runs", "show", logged], ["runs", "show", raised],
                 ["runs", "logs", raised], ["runs", "list"]):
        p = cli(*args)
        assert p.returncode == 0, p.stderr
        text = p.stdout.decode("utf-8")
        for line in text.splitlines():
            assert clean(line), (args, line)
        if args[:2] == ["runs", "logs"] and args[2] == logged:
            assert "said\\u001b]0;pwned\\u0007" in text, text   # shown, escaped
        if args[:2] == ["runs", "show"] and args[2] == raised:
            assert "\\u202eexe.txt" in text, text


def test_policy_suggest_output_is_printable():
    """A learned policy names what the run used; printed, it must not act on the terminal
    (C1 controls and bidi overrides are valid in a policy: they are written escaped)."""
    import tomllib
    from sandbox.audit.suggest import suggest
    paths = ["/srv/data/c1\u009b2J\u202e", "/srv/data/esc\x1b]0;pwned\x07",
             "/srv/data/\udcff\udcfe", "/srv/other/plain"]
    recs = [{"verdict": "allowed", "operation": "read", "path": p, "rule": "filesystem.read: /srv"}
            for p in paths]
    text, rules = suggest(recs, workdir=None, output=None, min_files=10)
    for line in text.splitlines():
        assert clean(line), line
    granted = tomllib.loads(text)["filesystem"]["read"]
    assert "/srv/data/c1\u009b2J\u202e" in granted and "/srv/other/plain" in granted
    assert not [g for g in granted if "\udcff" in g or "\x1b" in g]
