"""Programs under containment: exit codes, output, timeouts, trees, descriptors, env."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import processes_with

pytestmark = pytest.mark.isolation


def test_echo_output_and_exit_zero(launcher):
    r = launcher.spawn(["/bin/echo", "hi"])
    assert r.status == "ok", r.reason
    assert r.exit_code == 0 and r.stdout == "hi\n" and r.stderr == ""


def test_exit_code_passes_through(launcher):
    r = launcher.spawn(["sh", "-c", "exit 7"])
    assert (r.status, r.exit_code, r.reason) == ("error", 7, "exit code 7")


def test_killed_by_signal_is_signaled(launcher, py):
    r = launcher.spawn([py, "-I", "-c", "import ctypes; ctypes.string_at(0)"])
    assert r.status == "signaled" and r.signal == signal.SIGSEGV
    assert r.reason == "killed by signal 11 (SIGSEGV)"


def test_the_program_is_pid_2_under_an_init_and_its_signals_work(launcher):
    # The sandbox's init is PID 1; the program is PID 2, with ordinary signal
    # semantics: a signal it sends itself kills it, as outside a sandbox.
    r = launcher.spawn(["sh", "-c", "echo $$; kill -TERM $$; echo survived"])
    assert (r.status, r.signal, r.stdout) == ("signaled", 15, "2\n")


def test_missing_program_is_an_error_not_a_crash(launcher):
    r = launcher.spawn(["no-such-program-anywhere"])
    assert r.status == "error" and "no-such-program-anywhere" in r.reason
    assert r.exit_code == 127


def test_timeout_kills_the_whole_tree_including_setsid_double_forks(launcher):
    marker = f"{time.time() % 1000:.6f}"[:9]
    script = (f"(setsid sh -c 'sleep 3{marker} & sleep 3{marker}' &); "
              f"sh -c 'sleep 3{marker}' & sleep 3{marker}")
    r = launcher.spawn(["sh", "-c", script], timeout=1)
    assert r.status == "timeout", (r.status, r.reason)
    assert "wall-clock" in r.reason
    assert processes_with(f"3{marker}") == []


def test_timeout_can_only_shorten_the_policy(launcher):
    from sandbox.launcher.prepare import load, tighten_wall
    strict = load("strict")
    assert tighten_wall(strict, 10**6).limits.wall == strict.limits.wall
    assert tighten_wall(strict, 1).limits.wall == 1


def test_stdin_is_empty_and_only_stdio_and_ipc_descriptors_are_open(launcher, py):
    code = ("import os,sys; print(sys.stdin.read()=='', sorted(int(f) for f in "
            "os.listdir('/proc/self/fd')), os.environ['SANDBOX_IPC_FD'])")
    with open(os.devnull) as leak:  # an open descriptor in the launcher must not leak in
        os.set_inheritable(leak.fileno(), True)
        r = launcher.spawn([py, "-I", "-c", code])
    assert r.status == "ok", (r.reason, r.stderr)
    empty, fds, ipc = r.stdout.split(" ", 1)[0], r.stdout.split("[")[1].split("]")[0], \
        r.stdout.split()[-1]
    assert empty == "True"
    # 0,1,2, the IPC descriptor, and the one listdir itself opened
    assert len([f for f in fds.split(",") if f.strip()]) == 5
    assert ipc.strip() in fds


def test_environment_is_scrubbed_to_an_allowlist(launcher, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    r = launcher.spawn(["sh", "-c", "env"], env={"GREETING": "hi"})
    assert r.status == "ok"
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert "SECRET_TOKEN" not in env
    assert env["GREETING"] == "hi" and env["TMPDIR"] == "/tmp" and "SANDBOX_IPC_FD" in env


def test_private_tmp_is_fresh_and_removed(launcher, tmp_path):
    planted = f"/tmp/planted-{uuid.uuid4().hex}"
    open(planted, "w").close()
    try:
        r = launcher.spawn(["sh", "-c", f"test ! -e {planted} && echo x > /tmp/made && "
                                        "cat /tmp/made"])
        assert r.status == "ok" and r.stdout == "x\n", (r.reason, r.stderr)
        assert not os.path.exists("/tmp/made")
    finally:
        os.unlink(planted)


def test_rlimits_are_set_and_core_is_zero(launcher, py):
    code = ("import resource as r; print(r.getrlimit(r.RLIMIT_CORE)[0], "
            "r.getrlimit(r.RLIMIT_NOFILE)[0], r.getrlimit(r.RLIMIT_CPU)[0])")
    r = launcher.spawn([py, "-I", "-c", code], policy="strict")
    assert r.status == "ok", (r.reason, r.stderr)
    core, nofile, cpu = map(int, r.stdout.split())
    from sandbox.launcher.prepare import load
    lim = load("strict").limits
    assert core == 0 and nofile == lim.open_files and cpu == int(lim.cpu)
    # RLIMIT_CPU is the per-process backstop; the total is metered (test_cpu_budget.py)
    assert r.limits_applied["cpu"] in ("cgroup-v1", "cgroup-v2", "monitor")


def test_cpu_limit_ends_as_limit_exceeded(launcher, py, tmp_path):
    pol = tmp_path / "cpu.toml"
    pol.write_text('extends = ["default"]\n[limits]\ncpu = "1s"\n')
    r = launcher.spawn([py, "-I", "-c", "while True: pass"], policy=str(pol))
    assert (r.status, r.reason) == ("limit_exceeded", "cpu"), (r.status, r.reason)


def test_file_size_limit_stops_the_write(launcher, py, tmp_path):
    # PID 1 ignores SIGXFSZ (the kernel sends it like a user signal), so the
    # write fails with EFBIG instead; a non-init process would die of SIGXFSZ.
    pol = tmp_path / "fs.toml"
    pol.write_text('extends = ["default"]\n[limits]\nfile_size = "1MiB"\n')
    code = ("import os\ntry:\n open('/tmp/big','wb').write(b'0' * 4_000_000)\n"
            "except OSError as e: print(e.errno == 27, os.path.getsize('/tmp/big'))")
    r = launcher.spawn([py, "-I", "-c", code], policy=str(pol))
    assert (r.status, r.stdout) == ("ok", "True 1048576\n"), (r.reason, r.stderr)
    assert r.limits_applied["file_size"] == "rlimit"
    r = launcher.spawn(["sh", "-c", "head -c 4000000 /dev/zero > /tmp/big; echo $?"],
                       policy=str(pol))
    assert r.stdout == f"{128 + signal.SIGXFSZ}\n"


def test_no_child_outlives_a_launcher_killed_with_sigkill(tmp_path):
    marker = f"4{uuid.uuid4().int % 10**6:06d}"
    script = tmp_path / "launch.py"
    script.write_text(
        "import sys\nfrom sandbox.launcher.launcher import Launcher\n"
        f"Launcher().spawn(['sh', '-c', '(setsid sleep {marker} &); sleep {marker}'])\n")
    proc = subprocess.Popen([sys.executable, str(script)])
    for _ in range(200):  # wait until the sandbox is up
        if len(processes_with(marker)) >= 2:
            break
        time.sleep(0.05)
    assert len(processes_with(marker)) >= 2
    proc.kill()
    proc.wait()
    for _ in range(200):
        if not processes_with(marker):
            break
        time.sleep(0.05)
    assert processes_with(marker) == []


def test_many_runs_leave_no_descriptors_behind(launcher):
    import gc
    gc.collect()   # earlier tests' launchers close their fork servers' sockets when collected
    assert launcher.spawn(["true"]).status == "ok"   # starts the launcher's fork server (1 socket)
    import gc
    gc.collect()   # launchers of earlier tests close their fork servers when collected
    from sandbox.launcher import tidy
    tidy.drain()   # the shared thread removing finished runs' directories holds one while it works
    before = _run_fds()
    for _ in range(5):
        assert launcher.spawn(["true"]).status == "ok"
    tidy.drain()
    assert _run_fds() == before


def _run_fds() -> list[str]:
    """This process's descriptors but the run history's: the history keeps one SQLite
    writer connection, whose files (database, -wal, -shm) SQLite's own VFS opens and
    closes as it likes (it defers closing a file while another connection of the
    process holds a lock on it); what a run could leak is a socket, pipe or file of
    its own."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "/history/runs.sqlite" not in target:
            out.append(target if target.startswith("/") else target.split(":")[0])
    return sorted(out)


def test_programs_start_with_default_signal_dispositions(launcher):
    # `yes` must die of SIGPIPE when head is done, as outside the sandbox
    r = launcher.spawn(["sh", "-c", "yes | head -n 1"], timeout=30)
    assert (r.status, r.stdout) == ("ok", "y\n")


def test_programs_start_with_no_signal_ignored_or_blocked(launcher):
    # PID 2 resets every disposition and unblocks every signal before the exec (entry.py):
    # the kernel's own view of the exec'd program, not the shell's
    r = launcher.spawn(["/bin/grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"], timeout=30)
    assert r.status == "ok", r.reason
    assert r.stdout.split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16], r.stdout


def test_a_python_action_starts_with_default_signal_handlers(launcher):
    from sandbox.bench.spawn import _workflow
    r = launcher.spawn(_workflow("bench.signal_state"))
    assert r.status == "ok", r.reason
    assert r.store["signal_state"] == {"handled": [], "blocked": []}, r.store


def test_a_command_line_as_long_as_find_exec_plus_makes_it_runs(launcher):
    """`find ... -exec sandbox exec -- tool {} +` and `xargs` fill a command line up to
    the kernel's ARG_MAX with short names: 20,000 of them was refused before, as
    'argv: over its bound' (8,192 arguments at most). 60,000 (~960 KiB with their
    pointers) then passed as root but met E2BIG at the init's exec as an unprivileged
    user: under an RLIMIT_AS memory bound the stack limit was 2 MiB, whose quarter is
    what an execve may take; a long command line now keeps the stack it needs."""
    names = [f"f{i:06d}" for i in range(60_000)]
    r = launcher.spawn(["sh", "-c", 'echo $# "$1" "${60000}"', "sh", *names])
    assert r.status == "ok", r.reason
    assert r.stdout == "60000 f000000 f059999\n"
