"""Every bad CLI input: one stderr line, the documented exit code, nothing run,
nothing left behind.

The documented codes (sandbox/cli/main.py, README): 125 for `exec` and `run`
(so a script can tell bad input from the program's own exit 2, as `docker run`
and `env` do), 2 for every other subcommand. Each case runs the real CLI in a
fresh state directory ($SANDBOX_HOME), temp directory ($TMPDIR) and working
directory, with a program that would create a marker file if it ever ran.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Case:
    id: str
    args: list[str]     # {m} marker, {d} a scratch dir, {f} a file, {x} a dir that does not exist
    code: int
    says: str = ""                        # a fragment the one line must contain
    env: Callable[[Path], dict[str, str]] = field(default=lambda d: {})


# prints RAN on stdout (which sandbox leaves to the program) and tries to leave a marker
PROG = ["sh", "-c", "echo RAN; touch {m}"]


def _big_policy(key: str, value: str) -> str:
    return f'extends = ["default"]\n[limits]\n{key} = {value}\n'


CASES = [
    # -- exec: 125 ------------------------------------------------------------
    Case("exec-timeout-nan", ["exec", "--timeout", "nan", "--", *PROG], 125, "nan"),
    Case("exec-timeout-inf", ["exec", "--timeout", "inf", "--", *PROG], 125, "inf"),
    Case("exec-timeout-negative", ["exec", "--timeout", "-1", "--", *PROG], 125),
    Case("exec-timeout-word", ["exec", "--timeout", "soon", "--", *PROG], 125, "soon"),
    Case("exec-timeout-huge", ["exec", "--timeout", "1e9", "--", *PROG], 125),
    Case("exec-workdir-missing", ["exec", "--workdir", "{x}/wd", "--", *PROG],
         125, "/wd: no such directory"),
    Case("exec-workdir-file", ["exec", "--workdir", "{f}", "--", *PROG], 125),
    Case("exec-result-no-dir", ["exec", "--result", "{x}/r.json", "--", *PROG],
         125, "--result"),
    Case("exec-result-proc", ["exec", "--result", "/proc/r.json", "--", *PROG],
         125, "--result"),
    Case("exec-result-is-dir", ["exec", "--result", "{d}", "--", *PROG], 125,
         "directory"),
    Case("exec-audit-log-no-dir", ["exec", "--audit-log", "{x}/a.jsonl", "--",
                                   *PROG], 125, "--audit-log"),
    Case("exec-audit-log-sys", ["exec", "--audit-log", "/sys/a.jsonl", "--", *PROG],
         125, "--audit-log"),
    Case("exec-output-is-file", ["exec", "--output", "{f}", "--", *PROG], 125,
         "--output"),
    Case("exec-output-in-proc", ["exec", "--output", "/proc/out", "--", *PROG], 125,
         "--output"),
    Case("exec-env-no-name", ["exec", "--env", "=x", "--", *PROG], 125, "--env"),
    Case("exec-no-program", ["exec"], 125, "no program"),
    Case("exec-grant-memory", ["exec", "--memory", "lots", "--", *PROG], 125, "--memory"),
    Case("exec-grant-wall-huge", ["exec", "--wall", "1e9", "--", *PROG], 125, "--wall"),
    Case("exec-grant-net", ["exec", "--net", "wide", "--", *PROG], 125, "--net"),
    Case("exec-grant-env-name", ["exec", "--env", "1X=y", "--", *PROG], 125, "--env"),
    Case("run-grant-processes", ["run", "--processes", "0", "docs/examples/hello.json"], 125,
         "--processes"),
    Case("policy-show-grant-cpu", ["policy", "show", "strict", "--cpu", "forever"], 2, "--cpu"),
    Case("exec-unknown-option", ["exec", "--bogus", "--", *PROG], 125, "--bogus"),
    Case("exec-policy-missing", ["exec", "--policy", "{x}/p.toml", "--", *PROG],
         125, "p.toml"),
    Case("exec-policy-unknown-name", ["exec", "--policy", "nosuchpolicy", "--", *PROG],
         125, "nosuchpolicy"),
    Case("exec-policy-wall-1e9", ["exec", "--policy", "{p:wall = 1e9}", "--", *PROG],
         125, "limits.wall"),
    Case("exec-policy-cpu-1e19", ["exec", "--policy", "{p:cpu = 1e19}", "--", *PROG],
         125, "limits.cpu"),
    Case("exec-policy-memory-huge", ["exec", "--policy", "{p:memory = \"99999999TiB\"}", "--",
*PROG], 125, "limits.memory"),
    Case("exec-policy-processes-huge", ["exec", "--policy", "{p:processes = 9999999999}", "--",
   *PROG], 125, "limits.processes"),
    Case("exec-home-unusable", ["exec", "--", *PROG], 125, "state directory",
         env=lambda d: {"HOME": str(d / "a-file"), "SANDBOX_HOME": "", "XDG_STATE_HOME": ""}),
    Case("exec-home-missing", ["exec", "--", *PROG], 125, "does not exist",
         env=lambda d: {"HOME": str(d / "missing"), "SANDBOX_HOME": "", "XDG_STATE_HOME": ""}),
    # -- run: 125 -------------------------------------------------------------
    Case("run-missing-workflow", ["run", "{x}/wf.json"], 125, "wf.json"),
    Case("run-bad-json", ["run", "{f}"], 125),
    Case("run-timeout-nan", ["run", "--timeout", "nan", "docs/examples/hello.json"], 125),
    Case("run-result-no-dir", ["run", "--result", "{x}/r.json",
                               "docs/examples/hello.json"], 125, "--result"),
    Case("run-unknown-option", ["run", "--bogus", "docs/examples/hello.json"], 125, "--bogus"),
    Case("run-no-workflow", ["run"], 125),
    Case("run-store-no-value", ["run", "--store", "items", "docs/examples/hello.json"], 125,
         "--store"),
    # a value the child's end of the IPC channel must refuse (over 64 levels in the start
    # frame): it was sent anyway, the sandbox started and the run ended as an error
    Case("run-store-too-deep", ["run", "--store", "k=" + "[" * 62 + "]" * 62,
                                "docs/examples/hello.json"], 125, "deeper than 64"),
    # -- other subcommands: 2 -------------------------------------------------
    Case("policy-check-wall-1e9", ["policy", "check", "{p:wall = 1e9}"], 2, ":3: limits.wall"),
    Case("policy-check-cpu-1e19", ["policy", "check", "{p:cpu = 1e19}"], 2, ":3: limits.cpu"),
    Case("policy-check-memory-huge", ["policy", "check", "{p:memory = 4611686018427387904}"], 2,
         ":3: limits.memory"),
    Case("policy-show-missing", ["policy", "show", "{x}/p.toml"], 2, "p.toml"),
    Case("policy-unknown-action", ["policy", "frobnicate"], 2, "frobnicate"),
    Case("policy-explain-bad-operation", ["policy", "explain", "strict", "eat", "/x"], 2, "eat"),
    Case("policy-explain-port-range", ["policy", "explain", "strict", "connect",
                                       "example.com:99999"], 2, "port 99999 is not 1-65535"),
    Case("policy-explain-port-zero", ["policy", "explain", "strict", "connect", "[::1]:0"], 2,
         "port 0"),
    Case("policy-suggest-unwritable", ["policy", "suggest", "nosuchrun", "-o", "/proc/x.toml"],
         2),
    Case("audit-show-unknown-run", ["audit", "show", "nosuchrun"], 2, "audit store"),
    Case("exec-audit-store-is-a-file", ["exec", "--", *PROG], 125, "not a directory",
         env=lambda d: {"SANDBOX_AUDIT_DB": str(d / "a-file")}),
    Case("exec-audit-store-uncreatable", ["exec", "--", *PROG], 125, "audit store",
         env=lambda d: {"SANDBOX_AUDIT_DB": str(d / "a-file" / "x")}),
    Case("exec-workdir-inside-the-audit-store", ["exec", "--workdir", "{d}", "--", *PROG], 125,
         "no sandbox may see", env=lambda d: {"SANDBOX_AUDIT_DB": str(d / "a-dir")}),
    Case("audit-list-bad-count", ["audit", "list", "-n", "many"], 2, "many"),
    Case("runs-show-no-history", ["runs", "show", "abc123"], 2, "run history"),
    Case("runs-show-not-hex", ["runs", "show", "../x"], 2, "not a run id"),
    Case("runs-list-bad-status", ["runs", "list", "--status", "weird"], 2, "weird"),
    Case("runs-rm-nothing", ["runs", "rm"], 2),
    Case("gc-bad-age", ["gc", "--older-than", "soon"], 2, "soon"),
    Case("submit-no-server", ["submit", "--server", "http://127.0.0.1:1", "--", *PROG], 125,
         "is `sandbox serve` running there?"),
    Case("exec-policy-is-a-directory", ["exec", "--policy", "{d}", "--", *PROG], 125,
         "is a directory, not a policy file"),
    Case("unknown-command", ["frobnicate"], 2, "frobnicate"),
    Case("no-command", [], 2),
]


def _expand(arg: str, tmp: Path, marker: Path) -> str:
    if arg.startswith("{p:"):
        policy = tmp / "policy.toml"
        key, _, value = arg[3:-1].partition(" = ")
        policy.write_text(_big_policy(key, value))
        return str(policy)
    return arg.replace("{x}", str(tmp / "missing")).replace("{m}", str(marker)).replace("{d}", str(tmp / "a-dir")) \
              .replace("{f}", str(tmp / "a-file"))


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_nothing_runs(case: Case, tmp_path: Path) -> None:
    state, tmpdir, cwd = tmp_path / "state", tmp_path / "tmp", tmp_path / "cwd"
    for d in (state, tmpdir, cwd, tmp_path / "a-dir"):
        d.mkdir()
    (tmp_path / "a-file").write_text("{not json\n")
    marker = cwd / "ran"
    args = [_expand(a, tmp_path, marker) for a in case.args]
    args = [os.path.join(ROOT, a) if a.startswith("docs/") else a for a in args]
    env = {**os.environ, "SANDBOX_HOME": str(state), "TMPDIR": str(tmpdir),
           "SANDBOX_AUDIT_DB": str(state / "audit"), **case.env(tmp_path)}
    env = {k: v for k, v in env.items() if v != ""}
    before = _tree(tmp_path)
    p = subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.splitlines()
    assert p.returncode == case.code, p.stderr
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("sandbox"), lines[0]
    assert case.says in lines[0]
    assert p.stdout == ""
    assert not marker.exists(), "the program ran"
    assert _tree(tmp_path) == before, "something was left behind"


# -- a current directory that was deleted -------------------------------------------------

GONE = [
    ("exec", ["exec", "--", *PROG], 125),
    ("exec-grant", ["exec", "--read", "{d}", "--", *PROG], 125),
    ("run", ["run", os.path.join(ROOT, "docs/examples/hello.json")], 125),
    ("policy-show", ["policy", "show", "strict"], 2),
    ("policy-check", ["policy", "check", "strict"], 2),
]


@pytest.mark.parametrize("args,code", [(a, c) for _, a, c in GONE], ids=[i for i, _, _ in GONE])
def test_a_deleted_current_directory_is_one_line_that_says_so(args: list[str], code: int,
                                                              tmp_path: Path) -> None:
    """`rm -rf` of the directory a shell is still in: getcwd() fails with ENOENT, which
    read "[Errno 2] No such file or directory", naming nothing."""
    gone, marker = tmp_path / "gone", tmp_path / "ran"
    gone.mkdir()
    (tmp_path / "a-dir").mkdir()
    args = [a.replace("{m}", str(marker)).replace("{d}", str(tmp_path / "a-dir")) for a in args]
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "state")}
    p = subprocess.run(["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"', str(gone),
                        sys.executable, "-m", "sandbox", *args],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == code, p.stderr
    assert p.stderr.splitlines() == [
        "sandbox: error: the current directory no longer exists (deleted or moved): "
        "cd to one that does, or name one with --workdir"], p.stderr
    assert not marker.exists(), "the program ran"


def test_a_deleted_current_directory_is_no_matter_with_a_workdir(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "state")}
    p = subprocess.run(["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"', str(gone),
                        sys.executable, "-m", "sandbox", "exec", "--workdir", str(tmp_path),
                        "--", "pwd"], env=env, capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (0, f"{tmp_path}\n", "")


def test_a_workdir_the_caller_cannot_enter_is_refused_as_cd_would(tmp_path: Path) -> None:
    """`--workdir /root` as a user: the program started there and could list nothing
    (found by a new-user probe). Root enters any directory, as its own `cd` does."""
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0)
    try:
        p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--workdir", str(locked),
                            "--", "true"], capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(locked, 0o700)
    if os.geteuid() == 0:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == 125 and len(p.stderr.splitlines()) == 1, p.stderr
        assert "permission denied" in p.stderr
