"""The sandbox's init (PID 1), signal semantics, exit codes, and a start that never
depends on the policy's view: judged from the host (exit codes, RunResult, files).

Each expectation is what the same command gives outside a sandbox (or under
bubblewrap, which also runs its own init).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from sandbox.cli.common import exit_code_for, needs_explaining
from sandbox.launcher.result import RunResult

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sandbox(*args: str, cwd: str = ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, **kw)


# -- signals: the program is PID 2, under an init ---------------------------------

def test_a_program_that_kills_itself_with_sigkill_exits_137():
    p = sandbox("exec", "--", "sh", "-c", "kill -9 $$")
    assert p.returncode == 137, p.stderr
    assert len(p.stderr.splitlines()) == 1 and "SIGKILL" in p.stderr


def test_sigterm_to_itself_ends_the_program():
    p = sandbox("exec", "--", "sh", "-c", "kill -TERM $$; echo still alive")
    assert (p.returncode, p.stdout) == (143, "")


def test_abort_is_sigabrt_134_not_sigsegv(py):
    p = sandbox("exec", "--", py, "-I", "-c", "import os; os.abort()")
    assert p.returncode == 134 and "SIGABRT" in p.stderr


def test_sigpipe_has_its_default_action():
    p = sandbox("exec", "--timeout", "30", "--", "sh", "-c", "yes | head -1")
    assert (p.returncode, p.stdout) == (0, "y\n")


def test_the_real_wait_status_reaches_the_run_result(launcher):
    killed = launcher.spawn(["sh", "-c", "kill -9 $$"])
    assert (killed.status, killed.signal, killed.exit_code) == ("signaled", 9, None)
    exited = launcher.spawn(["sh", "-c", "exit 137"])
    assert (exited.status, exited.signal, exited.exit_code) == ("error", None, 137)


def test_the_program_is_pid_2_and_its_parent_the_init(launcher, py):
    # it leads a process group in the init's session (with no terminal), so that group
    # is not orphaned and a relayed ^Z stops it (init.c start_program)
    r = launcher.spawn([py, "-I", "-c", "import os; print(os.getpid(), os.getppid(), "
                                        "os.getpgid(0) == os.getpid(), os.getsid(0))"])
    assert (r.status, r.stdout) == ("ok", "2 1 True 1\n"), r.reason


ORPHANS = """
import subprocess, sys
for i in range(150):   # each sh leaves a background child behind: an orphan of PID 1
    subprocess.run(["sh", "-c", "sleep 0 &"], check=True)
print("done")
"""
HOLD = """
import subprocess
procs = [subprocess.Popen(["sleep", "30"]) for _ in range(40)]
"""


def test_orphans_are_reaped_under_a_small_process_cap(tmp_path, py):
    # The program reaps only its own children; their background children are
    # re-parented to PID 1. Unreaped, 150 zombies would exceed a cap of 30 (roomy
    # enough for the caller's own processes, which RLIMIT_NPROC also counts).
    pol = tmp_path / "cap.toml"
    pol.write_text('name = "cap"\nextends = ["default"]\n[limits]\nprocesses = 30\n'
                   'wall = "60s"\n')
    from sandbox.launcher.launcher import Launcher
    launcher = Launcher(capture_output=True)
    r = launcher.spawn([py, "-I", "-c", ORPHANS], policy=str(pol))
    assert (r.status, r.stdout) == ("ok", "done\n"), (r.reason, r.stderr[-500:])
    # ...and the cap is real: 40 live processes at once do not fit under it.
    held = launcher.spawn([py, "-I", "-c", HOLD], policy=str(pol))
    assert held.status != "ok" and "processes" in held.limits_applied


# -- a start that never depends on the view ----------------------------------------

def test_running_from_the_root_directory_works():
    p = sandbox("exec", "--", "/bin/echo", "hi", cwd="/")
    assert (p.returncode, p.stdout, p.stderr) == (0, "hi\n", "")
    p = sandbox("exec", "--policy", "strict", "--", "/bin/echo", "hi", cwd="/")
    assert (p.returncode, p.stdout) == (0, "hi\n"), p.stderr


@pytest.fixture(scope="module")
def static_binary(tmp_path_factory) -> str:
    """A static program (gcc -static; without libc.a, a -nostdlib one)."""
    d = tmp_path_factory.mktemp("static")
    os.chmod(d, 0o755)
    src = d / "s.c"
    src.write_text('#include <unistd.h>\nint main(void){write(1, "static\\n", 7); return 3;}\n')
    out = str(d / "prog")
    if subprocess.run(["gcc", "-static", "-o", out, str(src)], capture_output=True).returncode:
        src.write_text(textwrap.dedent("""\
            void _start(void) {
                __asm__ volatile("mov $1, %%eax; mov $1, %%edi; lea msg(%%rip), %%rsi;"
                                 "mov $7, %%edx; syscall; mov $231, %%eax; mov $3, %%edi;"
                                 "syscall; msg: .ascii \\"static\\\\n\\"" ::: "memory");
            }"""))
        subprocess.run(["gcc", "-nostdlib", "-static", "-o", out, str(src)], check=True)
    return out


def test_a_policy_without_extends_runs_a_static_binary(tmp_path, static_binary):
    d = os.path.dirname(static_binary)
    pol = tmp_path / "bare.toml"
    pol.write_text(f'name = "bare"\n[filesystem]\nread = ["{d}"]\nexec = ["{d}"]\n')
    p = sandbox("exec", "--policy", str(pol), "--", static_binary, cwd="/")
    assert (p.returncode, p.stdout, p.stderr) == (3, "static\n", "")


@pytest.mark.parametrize("audit", ["none", "all"])
def test_an_empty_policy_starts_and_reports_not_found(tmp_path, static_binary, audit):
    # Nothing of the host is in the view, not even this package or Python's stdlib:
    # the sandbox's own start must not need any of it.
    pol = tmp_path / "empty.toml"
    pol.write_text('name = "empty"\n' + (f'[audit]\nfiles = "{audit}"\n'
                                           if audit != "none" else ""))
    p = sandbox("exec", "--policy", str(pol), "--", static_binary, cwd="/")
    assert p.returncode == 127, p.stderr
    assert len(p.stderr.splitlines()) == 1 and "grants no" in p.stderr


# -- exec failures: one line, 126 / 127 ---------------------------------------------

def test_a_missing_program_is_127_with_one_line():
    p = sandbox("exec", "--", "no-such-program-xyz")
    assert p.returncode == 127
    assert p.stderr.count("\n") == 1 and "no-such-program-xyz: command not found" in p.stderr


def test_a_program_outside_the_view_is_127_and_names_the_grant(tmp_path, static_binary):
    p = sandbox("exec", "--policy", "strict", "--", static_binary, cwd="/")
    assert p.returncode == 127 and p.stderr.count("\n") == 1
    assert f'add read = ["{os.path.dirname(static_binary)}"]' in p.stderr


def test_a_file_the_policy_does_not_let_run_is_126_and_names_the_grant(tmp_path,
                                                                         static_binary):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(static_binary, work / "x")
    os.chmod(tmp_path, 0o755)
    os.chmod(work, 0o755)
    # strict: no exec on the work directory (default grants it since issue 13)
    p = sandbox("exec", "--policy", "strict", "--", "./x", cwd=str(work))
    assert p.returncode == 126 and p.stderr.count("\n") == 1, p.stderr
    assert f"cannot execute ./x: the policy grants no exec under {work}" in p.stderr
    assert f'add exec = ["{work}"]' in p.stderr


def test_a_non_executable_file_is_126(tmp_path):
    os.chmod(tmp_path, 0o755)
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    pol = tmp_path / "x.toml"
    pol.write_text(f'name = "x"\nextends = ["default"]\n[filesystem]\nexec = ["{tmp_path}"]\n')
    p = sandbox("exec", "--policy", str(pol), "--", str(script), cwd=str(tmp_path))
    assert p.returncode == 126 and "not executable" in p.stderr and p.stderr.count("\n") == 1


# -- the exit-code table --------------------------------------------------------------

@pytest.mark.parametrize("status,exit_code,sig,expect", [
    ("ok", 0, None, 0),
    ("error", 7, None, 7),
    ("signaled", None, 6, 134),
    ("timeout", None, 9, 124),
    ("setup_error", None, None, 125),
    ("error", 126, None, 126),
    ("error", 127, None, 127),
    ("limit_exceeded", None, 9, 137),
    ("violation", 0, None, 1),        # an IPC violation after a clean exit: never 0
    ("violation", None, 9, 137),
    ("error", None, None, 1),         # e.g. the monitor was lost
])
def test_the_exit_code_table(status, exit_code, sig, expect):
    r = RunResult(run_id="x", status=status, exit_code=exit_code, signal=sig,
                  reason="exit code 7" if exit_code == 7 else "why")
    assert exit_code_for(r) == expect
    assert needs_explaining(r) == (status != "ok" and exit_code != 7)


def test_a_timeout_result_keeps_the_signal_and_exits_124(tmp_path):
    out = tmp_path / "r.json"
    # The wall clock counts from the launcher's call, so a cold start's own set-up is in
    # it: under load 20 a cold monitor took 0.9 s to start, the limit of 1 s hit before
    # the program ran, and the result honestly had no signal. 3 s leaves the program
    # running when the limit comes.
    p = sandbox("exec", "--timeout", "3", "--result", str(out), "--", "sleep", "60")
    assert p.returncode == 124 and p.stderr.count("\n") == 1 and "wall-clock" in p.stderr
    assert "raise --timeout" in p.stderr
    assert json.loads(out.read_text())["signal"] == 9


def test_the_init_is_neither_audited_nor_subject_to_deny_rules(tmp_path):
    # Starting the init is the runtime's act: no audit record (policy suggest would
    # learn to grant this package), and a deny rule over the install must not stop runs.
    from sandbox import _native
    from sandbox.launcher.launcher import Launcher
    pol = tmp_path / "audited.toml"
    pol.write_text('name = "audited"\nextends = ["default"]\n[audit]\nfiles = "all"\n'
                   f'[filesystem]\ndeny = ["{os.path.dirname(_native.INIT_PATH)}"]\n')
    r = Launcher(capture_output=True).spawn(["/bin/echo", "hi"], policy=str(pol))
    assert (r.status, r.stdout) == ("ok", "hi\n"), r.reason
    paths = [p for p, _ in r.audit["top_paths"]]
    assert "/usr/bin/echo" in paths or "/bin/echo" in paths
    assert not [p for p in paths if "sandbox-init" in p]


def test_an_install_without_the_binary_builds_it_once(tmp_path, monkeypatch):
    # An editable checkout whose venv predates the init: the launcher builds it
    # (same flags) into the state directory instead of failing every run.
    from sandbox import _native
    monkeypatch.setattr(_native, "INIT_PATH", str(tmp_path / "absent"))
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "state"))
    built = _native.init_path()
    assert built.startswith(str(tmp_path / "state")) and os.access(built, os.X_OK)
    assert _native.init_path() == built
    assert subprocess.run([built]).returncode == 125   # refuses to run without its arguments


@pytest.mark.parametrize("status,reason,hint", [
    ("timeout", "wall-clock limit of 1s reached; tree killed", "raise --wall"),
    ("limit_exceeded", "memory", "raise [limits] memory"),
    ("limit_exceeded", "processes", "raise [limits] processes"),
    ("violation", "seccomp: forbidden syscall ptrace", "[syscalls] allow"),
])
def test_each_abnormal_end_says_what_to_change(status, reason, hint):
    from sandbox.cli.common import describe_failure
    line = describe_failure(RunResult(run_id="x", status=status, reason=reason, signal=9))
    assert "\n" not in line and line.startswith(f"sandbox: {status}: {reason}") and hint in line


def test_sandbox_run_follows_the_same_exit_code_table(tmp_path):
    os.chmod(tmp_path, 0o755)
    (tmp_path / "naps.py").write_text(
        "import time\nfrom sandbox.workflow import action\n\n"
        "@action('nap')\ndef nap(ctx):\n    time.sleep(60)\n\n"
        "@action('fail')\ndef fail(ctx):\n    raise ValueError('boom')\n")
    for name in ("nap", "fail"):
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "id": name, "imports": ["naps"],
            "stages": [{"id": "s", "actions": [{"name": name}]}]}))
    slow = sandbox("run", "--timeout", "2", str(tmp_path / "nap.json"))
    assert slow.returncode == 124, slow.stdout + slow.stderr
    assert slow.stderr.count("\n") == 1 and "raise --timeout" in slow.stderr
    failed = sandbox("run", str(tmp_path / "fail.json"))
    assert failed.returncode == 1 and "boom" in failed.stdout, failed.stdout + failed.stderr
    ok = sandbox("run", os.path.join(ROOT, "docs", "examples", "hello.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr


# -- the exit pipe is read from inside the sandbox's reach: any bytes, never trusted ---

from hypothesis import given, settings, strategies as st  # noqa: E402


def _read_status(data: bytes, init_status: int) -> int:
    from sandbox.monitor.setup_messages import program_status
    from sandbox.protocol import ExitReport
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    os.set_blocking(r, False)
    try:
        return program_status(r, init_status, ExitReport())
    finally:
        os.close(r)


def _envelope(status: object) -> bytes:
    return json.dumps({"type": "program_exit", "payload": {"status": status}},
                      separators=(",", ":")).encode()


@settings(derandomize=True, max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=80),
                      st.integers(-5, 1 << 20).map(_envelope),
                      st.integers(-(1 << 70), 1 << 70).map(_envelope),
                      st.integers(0, 0xFFFF).map(lambda n: f"{n}\n".encode()),
                      st.builds(lambda n, junk: _envelope(n) + junk,
                                st.integers(0, 0xFFFF), st.binary(min_size=1, max_size=80))),
       init_status=st.integers(0, 0xFFFF))
def test_the_exit_pipe_can_only_confirm_what_the_init_exit_code_says(data, init_status):
    got = _read_status(data, init_status)
    if got != init_status:
        assert os.WIFEXITED(init_status) and 0 <= got <= 0xFFFF
        code = os.WEXITSTATUS(got) if os.WIFEXITED(got) else \
            128 + os.WTERMSIG(got) if os.WIFSIGNALED(got) else 255
        assert code & 0xFF == os.WEXITSTATUS(init_status)


def test_the_exit_pipe_turns_137_into_a_signal_only_when_it_says_so():
    assert _read_status(_envelope(9), 137 << 8) == 9                # killed by SIGKILL
    assert _read_status(_envelope(35072), 137 << 8) == 137 << 8     # exit(137) itself
    assert _read_status(_envelope(9), 0) == 0                       # disagrees: the init wins
    assert _read_status(b"", 9) == 9                                # init killed: nothing written


def test_the_exit_pipe_speaks_only_the_protocol():
    """One typed message, ProgramExited, and nothing else: the former decimal line, an
    envelope of another type, a payload not exactly of its shape, or more bytes than
    the message's bound are all ignored (the init's exit code stands)."""
    assert _read_status(b"9\n", 137 << 8) == 137 << 8
    assert _read_status(b'{"type":"pid1_exit","payload":{"status":9}}', 137 << 8) == 137 << 8
    assert _read_status(b'{"type":"program_exit","payload":{"status":9,"x":1}}',
                        137 << 8) == 137 << 8
    assert _read_status(b'{"type":"program_exit","payload":{"status":true}}', 1 << 8) == 1 << 8
    padded = b'{"type":"program_exit","payload":{"status":9}}' + b" " * 100
    assert _read_status(padded, 137 << 8) == 137 << 8


def test_the_compiled_init_writes_a_program_exited_message():
    """The init binary itself, as PID 1 would run it (without a namespace here): its
    one write on the exit pipe is a ProgramExited the protocol module parses."""
    from sandbox import _native, protocol
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.set_inheritable(w, True)
            child = os.fork()
            if child == 0:
                os.kill(os.getpid(), 9)
            os.execv(_native.init_path(), ["sandbox-init", str(w), str(child)])
        finally:
            os._exit(99)
    os.close(w)
    try:
        data = os.read(r, 4096)
        _, st = os.waitpid(pid, 0)
    finally:
        os.close(r)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 137
    msg = protocol.from_envelope(data, protocol.ProgramExited,
                                 limit=protocol.envelope_max(protocol.ProgramExited))
    assert os.WIFSIGNALED(msg.status) and os.WTERMSIG(msg.status) == 9
