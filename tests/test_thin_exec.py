"""`sandbox exec` through the per-user daemon (sandbox/thin): the runner's semantics on
this path, the daemon's environment kept out of every run, and who may use the socket.

A module-scoped daemon runs with its own SANDBOX_HOME and an environment holding
canaries; every test checks (through the daemon's `served` count) that its command
really went through the daemon, so a silent fall-back to the cold path cannot pass.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import time

import pytest

from pty_run import (at_a_terminal, ctrl_z_stops_the_job, run_on_pty, stopped_job_keeps_its_terminal,
                     type_keys)
from stdin_probes import socket_stdin_left, to_dev_full
from sandbox.thin import control as D
from sandbox.thin import wire

SOCK = os.path.basename(wire.socket_path({"SANDBOX_HOME": "/"}))   # this install's socket

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANARY_DIR = os.path.join(ROOT, "tests", "canary")
PREFIX = "SBXCANARY"
SANDBOX = [sys.executable, "-m", "sandbox"]


def _compiled() -> list[str]:
    from sandbox import _native
    return [_native.client_path()]


class Served:
    def __init__(self, home: str, values: dict[str, str], cmd: list[str]) -> None:
        self.home, self.values, self.cmd = home, values, cmd
        self.path = wire.socket_path({"SANDBOX_HOME": home})
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        self.env.update(SANDBOX_HOME=home, SBX_CALLER="from-the-caller")

    def count(self) -> int:
        line = D.status(self.path)
        assert line, "the daemon is not running"
        return int(line.split(" served ")[1].split()[0])

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        before = self.count()
        kw.setdefault("capture_output", True)
        p = subprocess.run([*self.cmd, *args], cwd=kw.pop("cwd", ROOT), env=kw.pop("env", self.env),
                           text=True, timeout=120, **kw)
        assert self.count() == before + 1, "not served by the daemon"
        return p


@pytest.fixture(scope="module", params=["python", "compiled"])
def served(request, tmp_path_factory):
    """One daemon per client: the Python one (`python -m sandbox`, sandbox/thin/client.py)
    and the compiled one (sandbox/_native/client.c); every test runs through both."""
    home = str(tmp_path_factory.mktemp("thin"))
    os.chmod(home, 0o700)
    os.mkdir(os.path.join(home, "daemon"), 0o700)
    values = {n: f"{PREFIX}{n}{os.urandom(12).hex()}" for n in ("daemon", "visible", "caller")}
    denv = {"SANDBOX_HOME": home, "HOME": os.environ.get("HOME", "/"),
            "AWS_SECRET_ACCESS_KEY": values["daemon"], "SBX_CALLER": "from-the-daemon",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.Popen([sys.executable, "-I", "-m", "sandbox.thin.daemon",
                             wire.socket_path({"SANDBOX_HOME": home})], env=denv,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    s = Served(home, values, SANDBOX if request.param == "python" else _compiled())
    deadline = time.monotonic() + 60
    while D.status(s.path) is None:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    yield s
    D.stop(s.path)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- exit codes and input --------------------------------------------------------------

def test_the_programs_own_exit_code(served):
    assert served.run("exec", "--", "sh", "-c", "exit 7").returncode == 7


def test_bad_input_is_125_with_one_line(served):
    p = served.run("exec", "--no-such-option", "--", "true")
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = served.run("exec", "--policy", "no-such-policy", "--", "true")
    assert p.returncode == 125 and "Traceback" not in p.stderr, p.stderr


def test_a_missing_program_is_127(served):
    assert served.run("exec", "--", "/no/such/program").returncode == 127


def test_piped_stdin_and_stdin_none(served):
    assert served.run("exec", "--", "cat", input="piped in\n").stdout == "piped in\n"
    p = served.run("exec", "--stdin", "none", "--", "sh", "-c", "cat; echo end",
                   input="never read\n")
    assert p.stdout == "end\n"


def test_a_file_stdin_keeps_what_the_program_did_not_read(served, tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("a\nb\nc\n")
    with open(f) as stdin:
        first = served.run("exec", "--", "head", "-c", "2", stdin=stdin)
        assert first.stdout == "a\n"
        second = served.run("exec", "--", "true", stdin=stdin)   # reads nothing
        assert second.returncode == 0
        assert stdin.read() == "b\nc\n"


def test_a_pipe_stdin_is_taken_only_as_the_program_reads_it(served):
    before = served.count()
    cmd = " ".join(f"'{a}'" for a in served.cmd)
    p = subprocess.run(["sh", "-c", f'printf "a\\nb\\nc\\n" | while read f; do {cmd} exec -- '
                        f'echo "item $f"; done; printf "l1\\nl2\\n" | {{ {cmd} exec -- '
                        'head -c 3 >/dev/null; cat; }'], env=served.env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.stdout == "item a\nitem b\nitem c\nl2\n", p.stderr
    assert served.count() == before + 4, "not served by the daemon"


def test_a_pipe_or_socket_stdin_is_lent_past_its_first_64k(served):
    """Findings H1 and H2 on the warm path: a program reading 100000 bytes of a 5 MB
    pipe leaves the other 4900000 (the relay copied ahead once 64 KiB were read, and
    4819776 were left), and a stream socket keeps what the program did not read."""
    before = served.count()
    cmd = " ".join(f"'{a}'" for a in served.cmd)
    p = subprocess.run(["sh", "-c", f"head -c 5000000 /dev/zero | {{ {cmd} exec -- "
                        "head -c 100000 | wc -c; wc -c; }"], env=served.env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["100000", "4900000"], p.stderr
    assert served.count() == before + 1, "not served by the daemon"
    assert socket_stdin_left([*served.cmd, "exec", "--"], served.env,
                             "read x; echo got $x") == \
        "0 b'got first\\n' b'second\\nthird\\n' 100013"
    assert served.count() == before + 2, "not served by the daemon"


def test_a_write_error_on_the_callers_output_is_not_swallowed(served):
    """Finding H4 on the warm path: `echo hi > /dev/full` exited 0, silently."""
    before = served.count()
    for program in ("echo hi", "head -c 1000000 /dev/zero"):
        code, err = to_dev_full([*served.cmd, "exec", "--"], served.env, program)
        assert code == 1 and err.count("No space left on device") == 1, (code, err)
    assert served.count() == before + 2, "not served by the daemon"


def test_the_callers_working_directory(served, tmp_path):
    d = tmp_path / "here"
    d.mkdir()
    d.chmod(0o755)
    tmp_path.chmod(0o755)
    assert served.run("exec", "--", "pwd", cwd=str(d)).stdout == f"{d}\n"


def test_a_caller_with_closed_stdio_still_runs(served):
    cmd = f"exec 0<&-; {' '.join(served.cmd)} exec -- sh -c 'cat; echo done >&2' 1>&-"
    before = served.count()
    p = subprocess.run(["sh", "-c", cmd], cwd=ROOT, env=served.env, capture_output=True,
                       text=True, timeout=120)
    assert (p.returncode, p.stderr.splitlines()[-1:]) == (0, ["done"]), p.stderr
    assert served.count() == before + 1



@pytest.mark.parametrize("closing", ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"])
def test_a_callers_closed_std_descriptor_is_closed_for_the_program(served, closing, py):
    """As on the cold path (test_runner_stdio): closed, not /dev/null."""
    from test_runner_stdio import closed_as_direct
    before = served.count()
    closed_as_direct([*served.cmd, "exec"], closing, py, env=served.env)
    assert served.count() > before


def _running(path: str) -> int:
    line = D.status(path) or ""
    return int(line.split(" running ")[1].split()[0])


def test_a_runs_private_directory_honours_tmpdir_and_is_gone_once_the_fork_ended(
        served, tmp_path):
    """The run's private directory (the mountpoint of its /tmp, its view files) goes
    under the caller's TMPDIR, as on the cold path, and is removed before the fork ends:
    a fork that left with the removal still queued (os._exit skips atexit) kept it on
    the host's disk after the run, for ever (2 of 5 runs; without namespaces it holds
    the program's /tmp itself)."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {**served.env, "TMPDIR": str(tmpdir)}
    many = "mkdir /tmp/d; for i in $(seq 300); do echo kept > /tmp/d/f$i; done; ls /tmp/d | wc -l"
    for _ in range(4):
        p = served.run("exec", "--", "sh", "-c", many, env=env)
        assert (p.returncode, p.stdout.strip()) == (0, "300"), p.stderr
    deadline = time.monotonic() + 60
    while _running(served.path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(served.path) == 0
    assert os.listdir(tmpdir) == []

# -- the daemon's one warm fork server (sandbox.thin.shared) ---------------------------

def _forkserver_pid(served) -> int:
    line = D.status(served.path) or ""
    return int(line.split(" forkserver ")[1].split()[0])


def _spare(path: str) -> tuple[int, int]:
    """(the spare fork's pid or 0, runs served by spares) from the daemon's status."""
    words = (D.status(path) or "").split()
    return int(words[words.index("spare") + 1]), int(words[words.index("from-spare") + 1])


def _gone(pid: int, timeout: float = 30, zombie: bool = False) -> bool:
    """`pid` ended and was reaped (or, with `zombie`, at least ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if zombie and f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _monitor_parents(served, during: str) -> set[int]:
    """The ancestors of every `sleep <during>` running now, up to the parent of its
    run's monitor."""
    seen: set[int] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] != [b"sleep", during.encode()]:
                    continue
        except OSError:
            continue
        chain = [int(pid)]
        for _ in range(6):   # sleep -> sh -> init (PID 1) -> stub -> monitor -> its parent
            try:
                with open(f"/proc/{chain[-1]}/stat") as f:
                    chain.append(int(f.read().rsplit(")", 1)[1].split()[1]))
            except (OSError, ValueError, IndexError):
                break
        seen.update(chain[1:])
    return seen


def test_concurrent_runs_take_their_monitors_from_the_one_warm_fork_server(served):
    """Every run's monitor is forked by the daemon's fork server (no monitor exec'd per
    run), several runs at once each get their own (their own output and exit code: the
    requests are serialised on the shared socket), and the server stays the same one."""
    server = _forkserver_pid(served)
    assert server > 0
    before = served.count()
    procs = [subprocess.Popen([*served.cmd, "exec", "--", "sh", "-c",
                               f"echo run{i}; sleep 3.{i}; exit {10 + i}"],
                              cwd=ROOT, env=served.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(5)]
    deadline = time.monotonic() + 60
    parents: set[int] = set()
    while time.monotonic() < deadline and server not in parents:
        parents = _monitor_parents(served, "3.0")
        time.sleep(0.1)
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [10 + i for i in range(5)], outs
    assert [o for o, _ in outs] == [f"run{i}\n" for i in range(5)], outs
    assert served.count() == before + 5
    assert server in parents, "the run's monitor is not a child of the daemon's fork server"
    assert _forkserver_pid(served) == server


def test_a_dead_fork_server_is_replaced_before_the_next_run(served):
    server = _forkserver_pid(served)
    os.kill(server, signal.SIGKILL)
    _gone(server, zombie=True)   # reapable: a zombie (the daemon reaps it) or gone
    spare, _ = _spare(served.path)     # made before: a client of the dead server
    p = served.run("exec", "--", "sh", "-c", "echo after; exit 3")
    assert (p.returncode, p.stdout) == (3, "after\n"), p.stderr
    assert _forkserver_pid(served) not in (0, server)
    assert spare and _gone(spare), "the stale spare was neither used nor reaped"


def test_runs_one_after_another_are_served_by_spares(served):
    """After each run the daemon forks the next run's process ahead (sandbox/thin/fork.py):
    the next request is handed to it, and a new one is made once that run is answered."""
    first, used = _spare(served.path)
    assert first, "no spare after the last run"
    for i in range(2):
        p = served.run("exec", "--", "sh", "-c", f"echo {i}; exit {i + 6}")
        assert (p.returncode, p.stdout) == (i + 6, f"{i}\n"), p.stderr
    now, used_now = _spare(served.path)
    assert used_now == used + 2
    assert now and now != first and _gone(first)


def _memory(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return {p[0][:-1]: int(p[1]) for p in (line.split() for line in f)
                if len(p) >= 2 and p[0].endswith(":") and p[1].isdigit()}


def test_a_spare_copies_the_pages_it_shares_before_its_request(served):
    """While a spare waits, it copies the pages it shares with the daemon
    (sandbox/thin/prefault.py), so the run it becomes does not fault on each page it
    writes: once it has, nearly all its anonymous memory is its own."""
    served.run("exec", "--", "true")
    deadline = time.monotonic() + 30
    mem: dict[str, int] = {}
    while time.monotonic() < deadline:
        spare, _ = _spare(served.path)
        if spare:
            try:
                mem = _memory(spare)
            except FileNotFoundError:
                continue
            if mem["Private_Dirty"] >= 0.8 * mem["Anonymous"]:
                break
        time.sleep(0.05)
    assert mem and mem["Private_Dirty"] >= 0.8 * mem["Anonymous"] > 0, mem


def test_a_spare_holds_nothing_of_the_daemons_and_ends_with_it(tmp_path):
    """A spare has none of the daemon's descriptors but the fork server's socket (no
    listening socket, no client's connection): once the daemon is SIGKILLed nothing
    answers on its socket, and the spare sees the end of its stream and exits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["SANDBOX_HOME"] = str(tmp_path / "state")
    path = wire.socket_path(env)
    daemon = int(D.start(env).split("running pid ")[1].split()[0])
    try:
        spare, _ = _spare(path)
        assert spare
        # judged once the spare waits for its request (blocked in recvmsg, x86_64 47):
        # a fork caught before its first steps still holds all the daemon's descriptors
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(f"/proc/{spare}/syscall") as f:
                if f.read().split()[0] == "47":
                    break
            time.sleep(0.02)
        ours = {os.readlink(f"/proc/{daemon}/fd/{fd}") for fd in os.listdir(f"/proc/{daemon}/fd")}
        theirs = {os.readlink(f"/proc/{spare}/fd/{fd}") for fd in os.listdir(f"/proc/{spare}/fd")}
        shared = {t for t in ours & theirs if t.startswith(("socket:", "pipe:", "anon_inode:"))}
        # the fork server's socket, and the pipe of the spare's own frame (its write end)
        assert sorted(t.split(":")[0] for t in shared) == ["pipe", "socket"], shared
        pipe = next(t for t in shared if t.startswith("pipe:"))
        for fd in os.listdir(f"/proc/{spare}/fd"):
            if os.readlink(f"/proc/{spare}/fd/{fd}") == pipe:
                with open(f"/proc/{spare}/fdinfo/{fd}") as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
                assert flags & os.O_ACCMODE == os.O_WRONLY
        server = _forkserver_pid_at(path)
    finally:
        os.kill(daemon, signal.SIGKILL)
    assert _gone(daemon, zombie=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        s.connect(path)
    s.close()
    assert _gone(spare), "the spare outlived its daemon"
    assert _gone(server), "the fork server outlived its daemon"


def _forkserver_pid_at(path: str) -> int:
    return int((D.status(path) or "").split(" forkserver ")[1].split()[0])


def test_the_run_is_in_the_history_when_exec_returns(served):
    """The daemon writes the fork's history row before it answers the client
    (sandbox.thin.relay): read right after `sandbox exec` returned, it is there."""
    from sandbox.history import History
    tag = os.urandom(6).hex()
    p = served.run("exec", "--", "sh", "-c", f"exit 5 # {tag}")
    assert p.returncode == 5, p.stderr
    h = History(os.path.join(served.home, "history", "runs.sqlite"))
    mine = [e for e in h.list(limit=20) if tag in e.command]
    assert [(e.status, e.exit_code, e.kind) for e in mine] == [("error", 5, "exec")]


def test_a_fork_killed_mid_run_is_answered_from_its_wait_status(served):
    """A run's fork that dies without its frame (SIGKILL) still gets its client an
    answer, from the wait status (125: the runner's own failure), and the daemon
    serves the next run."""
    daemon = int((D.status(served.path) or "").split("running pid ")[1].split()[0])
    mark = f"{os.urandom(4).hex()}"
    client = subprocess.Popen([*served.cmd, "exec", "--", "sh", "-c", f"sleep 30 # {mark}"],
                              env=served.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    fork = 0
    while not fork and time.monotonic() < deadline:
        time.sleep(0.05)
        for pid in _children(daemon):
            if pid not in (_forkserver_pid(served), _spare(served.path)[0]):
                fork = pid
    assert fork, "no fork of the daemon ran the client's request"
    while time.monotonic() < deadline and not any(
            mark in _cmdline(q) for q in _all_pids()):
        time.sleep(0.05)
    os.kill(fork, signal.SIGKILL)
    assert client.wait(timeout=60) == 125, client.stderr.read()
    p = served.run("exec", "--", "sh", "-c", "exit 4")
    assert p.returncode == 4, p.stderr


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def _all_pids() -> list[int]:
    return [int(x) for x in os.listdir("/proc") if x.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# -- the environment: the caller's, never the daemon's -----------------------------------

def test_the_run_gets_the_callers_environment_not_the_daemons(served):
    p = served.run("exec", "--env", "SBX_CALLER", "--", "sh", "-c", 'echo "$SBX_CALLER"')
    assert p.returncode == 0 and p.stdout == "from-the-caller\n", (p.stdout, p.stderr)


def test_the_daemons_environment_and_heap_never_reach_the_sandboxee(served):
    values = served.values
    spec = {n: [len(v), hashlib.sha256(v.encode()).hexdigest()] for n, v in values.items()}
    env = {**served.env, "AWS_SECRET_ACCESS_KEY": values["caller"]}
    p = served.run("exec", "--env", f"SBX_VISIBLE={values['visible']}", "--",
                   sys.executable, "-I", "canary_scan.py", PREFIX, json.dumps(spec),
                   cwd=CANARY_DIR, env=env)
    assert p.returncode == 0, p.stderr
    scan = json.loads(p.stdout)
    assert scan["scanned"] > 1 << 20 and scan["regions"] > 5, scan
    found = scan["found"]
    assert "environ" in found.get("visible", []) and "memory" in found.get("visible", []), found
    assert "daemon" not in found and "caller" not in found, found


# -- signals ----------------------------------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 5), (signal.SIGINT, 6),
                                      (signal.SIGHUP, 7)])
@pytest.mark.parametrize("group", [False, True], ids=["client", "group"])
def test_signals_to_the_client_reach_the_program(served, sig, code, group):
    """To the client alone, or to its whole process group (`timeout`, `kill -- -PGID`,
    a closed terminal): the program gets it once, and ends the run."""
    name = signal.Signals(sig).name[3:]
    script = (f'trap "echo got {name}; exit {code}" {name}; echo ready; '
              'while :; do sleep 0.05; done')
    before = served.count()
    proc = subprocess.Popen([*served.cmd, "exec", "--", "sh", "-c", script], cwd=ROOT,
                            env=served.env, stdout=subprocess.PIPE, text=True,
                            start_new_session=group)
    try:
        assert proc.stdout.readline() == "ready\n"
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
        assert proc.stdout.read() == f"got {name}\n"
    finally:
        proc.kill()
        proc.wait()
    assert served.count() == before + 1


from test_runner_stdio import (COUNTING, GROUP_KILLERS, SIGNAL_STATE,  # noqa: E402
                               _ignoring_hup_blocking_usr1, _signal_number)


def test_the_client_relays_what_the_group_signals_as_the_cold_path(served):
    """wire.SIGNALS (the client's list, without `signal`) is the cold path's
    sandbox.group_signals.RELAYED and WINCH."""
    from sandbox import group_signals
    assert sorted(wire.SIGNALS) == sorted((*group_signals.RELAYED, signal.SIGWINCH))


@pytest.mark.parametrize("name", GROUP_KILLERS)
def test_every_signal_to_the_clients_group_reaches_the_program_once(served, name, py):
    """As on the cold path (test_runner_stdio): the client, alone in the caller's group,
    must relay every signal a caller may send its group (it died of ALRM, PIPE...)."""
    if name == "RTMIN" and served.cmd == _compiled() and _native_is_musl():
        pytest.skip("musl keeps signal 34 for itself: the compiled client cannot catch it")
    before = served.count()
    proc = subprocess.Popen([*served.cmd, "exec", "--", py, "-c", COUNTING,
                             str(_signal_number(name))], cwd=ROOT, env=served.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, _signal_number(name))
        assert proc.wait(timeout=60) == 3, proc.stderr.read()
        assert proc.stdout.read() == "got 1\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert served.count() == before + 1


def _native_is_musl() -> bool:
    with open(_compiled()[0], "rb") as f:
        return b"musl" in f.read() or not _has_interpreter(_compiled()[0])


def test_the_clients_ignored_and_blocked_signals_are_the_programs(served):
    """nohup through the daemon: the client's SIG_IGN and mask, not the daemon's fork's
    defaults (probe4 H6)."""
    direct = subprocess.run(SIGNAL_STATE, capture_output=True, text=True,
                            preexec_fn=_ignoring_hup_blocking_usr1)
    p = served.run("exec", "--", *SIGNAL_STATE, preexec_fn=_ignoring_hup_blocking_usr1)
    assert p.returncode == 0, p.stderr
    assert p.stdout == direct.stdout


ATTRIBUTES = "umask; nice; ionice; cat /proc/self/oom_score_adj; ulimit -S -s"


def _unlike_the_daemon() -> None:
    """A caller whose process attributes differ from the daemon's (probe4 H8, M4)."""
    import resource
    os.umask(0o077)
    os.nice(7)
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("300")
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    resource.setrlimit(resource.RLIMIT_STACK, (4096 * 1024, hard))
    subprocess.run(["ionice", "-c", "3", "-p", str(os.getpid())], check=True)


def test_the_clients_umask_nice_ionice_oom_and_limits_are_the_programs(served):
    """A direct exec keeps the caller's umask, nice value, I/O class, oom_score_adj and
    soft limits; a warm run had the daemon's (umask 0022 for the caller's 077: files
    made with more permissions than asked). Judged against the direct run."""
    direct = subprocess.run(["sh", "-c", ATTRIBUTES], capture_output=True, text=True,
                            preexec_fn=_unlike_the_daemon)
    assert direct.stdout.split("\n")[:3] == ["0077", "7", "idle"], direct.stdout
    p = served.run("exec", "--", "sh", "-c", ATTRIBUTES, preexec_fn=_unlike_the_daemon)
    assert p.returncode == 0, p.stderr
    # the stack limit is the policy's where memory is an address-space limit (an
    # unprivileged run: the launcher keeps the stack an exec needs), as on the cold path
    cold = subprocess.run([*SANDBOX, "exec", "--", "sh", "-c", ATTRIBUTES], cwd=ROOT,
                          env={**served.env, "SANDBOX_DAEMON": "0"}, capture_output=True,
                          text=True, timeout=120, preexec_fn=_unlike_the_daemon)
    assert p.stdout == cold.stdout, (p.stdout, cold.stdout, cold.stderr)
    assert p.stdout.split("\n")[:4] == direct.stdout.split("\n")[:4]
    if os.geteuid() == 0:
        assert p.stdout == direct.stdout


EARLY = ["exec", "--", "sh", "-c", "echo started; sleep 4; echo finished"]


def _ends_by(proc: subprocess.Popen, sig: int) -> None:
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert b"finished" not in out, (out, err)
    assert proc.returncode in (-sig, 128 + sig), (proc.returncode, out, err)


@pytest.mark.parametrize("delay", [0, 0.002, 0.005, 0.01, 0.02, 0.04])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_compiled_clients_first_milliseconds_is_the_programs(
        served, delay, sig):
    """`timeout` or ^C right after the client started: the program gets the signal and
    dies of it (or never starts); the run must not go on to its end (exit 0) nor end as
    a silent 125 (probe4 H9: the client's handlers came after its request, the daemon's
    fork was signalled before it relayed anything, the monitor dropped a signal that
    came before PID 1 was ready, or one read with the spec)."""
    if served.cmd != _compiled():
        pytest.skip("the Python client's own start (the interpreter's) is not ours: "
                    "test_a_signal_as_the_daemon_takes_the_request")
    proc = subprocess.Popen([*served.cmd, *EARLY], cwd=ROOT, env=served.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, sig)
    _ends_by(proc, sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_as_the_daemon_takes_the_request_is_the_programs(served, sig):
    """The signal sent the moment the daemon counted the request: its fork has not yet
    a run to relay it to; it must keep it for the program."""
    before = served.count()
    proc = subprocess.Popen([*served.cmd, *EARLY], cwd=ROOT, env=served.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while served.count() == before and time.monotonic() < deadline:
        pass
    os.killpg(proc.pid, sig)
    _ends_by(proc, sig)


@pytest.mark.parametrize("how", ["INT", "QUIT", "TERM", "exit130"])
def test_the_client_dies_of_the_programs_ctrl_c(served, how):
    """As on the cold path (test_runner_stdio): the daemon answers "K<signum>" and the
    client dies of it; other ends stay exit codes."""
    from test_runner_stdio import DIES_OF
    p = served.run("exec", "--", "sh", "-c", DIES_OF[how])
    assert p.returncode == {"INT": -signal.SIGINT, "QUIT": -signal.SIGQUIT, "TERM": 143,
                            "exit130": 130}[how], p.stderr


def test_ctrl_c_stops_the_callers_shell_loop(served):
    """probe4 M2's reproduction: ^C at the terminal during a loop of runs ends the loop
    (pipes, -T: the terminal signals its foreground group, the shell with its child; a
    shell aborts only if the child died of it too)."""
    script = ("for i in 1 2 3; do echo in$i; " + " ".join(served.cmd) +
              " exec -T -- sleep 20; echo next $i; done; echo loop-done")
    out, code = run_on_pty(["/bin/bash", "-c", script], served.env,
                           [("in1", lambda fd: (time.sleep(1), os.write(fd, b"\x03")))])
    assert b"next" not in out and b"loop-done" not in out, out


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_a_hangup_of_the_clients_group_ends_the_program_as_directly(served, sig):
    """As on the cold path (test_runner_stdio)."""
    from test_runner_stdio import ends_as_direct
    ends_as_direct([*served.cmd, "exec"], sig, env=served.env)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT, signal.SIGHUP])
def test_a_terminal_signal_to_the_clients_group_reaches_the_programs_children(
        served, sig, py):
    """As on the cold path (test_runner_stdio, probe4 M1)."""
    from test_runner_stdio import GRANDCHILD, group_signal_reaches
    # the shell ignores it (its end would end the sandbox, and the child with it)
    shell = ["sh", "-c", f'trap "" {int(sig)}; {py} -c "$0" {int(sig)}; echo after',
             GRANDCHILD]
    out = group_signal_reaches([*served.cmd, "exec", "--", *shell], sig, env=served.env)
    assert f"child got {int(sig)}\n" in out


# -- a terminal (-t) ----------------------------------------------------------------------

def test_tty_size_and_window_changes(served):
    before = served.count()

    def resize(fd):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 70, 0, 0))
        time.sleep(0.5)     # SIGWINCH: terminal -> client -> daemon -> launcher -> pty
        os.write(fd, b"\n")
    out, code = run_on_pty([*served.cmd, "exec", "-t", "--", "sh", "-c",
                            "tty; stty size; echo go; read x; stty size; exit 3"],
                           served.env, [("go", resize)])
    lines = out.decode().replace("\r", "").splitlines()
    assert code == 3, out
    assert lines[0] == "/dev/console" and lines[1] == "33 101", out
    assert lines[-1] == "20 70", out
    assert served.count() == before + 1


def test_an_interactive_terminal_gets_a_tty_without_asking(served):
    before = served.count()
    at_a_terminal(served.cmd, served.env)
    assert served.count() == before + 4


def test_ctrl_z_stops_the_program_and_fg_resumes_it(served, py):
    """As on the cold path (test_runner_stdio)."""
    before = served.count()
    ctrl_z_stops_the_job([*served.cmd, "exec"], py, served.env)
    assert served.count() == before + 1


@pytest.mark.parametrize("how", [{}, {"bg": True}, {"pty": True}, {"pty": True, "bg": True}],
                         ids=["fg", "bg-then-fg", "pty", "pty-bg-then-fg"])
def test_a_job_stopped_and_resumed_still_reads_its_terminal(served, py, how):
    """As on the cold path (test_runner_stdio)."""
    before = served.count()
    stopped_job_keeps_its_terminal([*served.cmd, "exec"], py, served.env, **how)
    assert served.count() == before + 1


def test_ctrl_c_on_the_terminal_and_a_repl(served):
    out, code = run_on_pty([*served.cmd, "exec", "-t", "--", "sh", "-c", "echo go; sleep 30"],
                           served.env, [("go", type_keys(b"\x03"))])
    assert code == -signal.SIGINT, out   # as the program died: of the ^C (probe4 M2)
    out, code = run_on_pty([*served.cmd, "exec", "-t", "--", sys.executable, "-I", "-q"],
                           served.env, [(">>>", type_keys(b"print(6 * 7)\nexit(4)\n"))])
    assert code == 4 and b"42" in out, out


# -- who may use it ---------------------------------------------------------------------

def test_socket_and_directory_are_private(served):
    st = os.lstat(served.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    st = os.lstat(os.path.dirname(served.path))
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_another_uid_gets_nothing_run_even_through_an_open_socket_file(served, tmp_path):
    """Even with the file permissions wrong, SO_PEERCRED stops another user."""
    marker = tmp_path / "ran"
    tmp_path.chmod(0o777)
    os.chmod(served.path, 0o666)
    before = served.count()
    try:
        opath = os.open(served.path, os.O_PATH)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                import prctl
                prctl.set_dumpable(1)      # so /proc/self/fd is ours to walk
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(f"/proc/self/fd/{opath}")      # past the 0700 directory
                msg = wire.encode("exec", ["exec", "--", "/bin/touch", str(marker)], {})
                s.settimeout(10)
                try:
                    socket.send_fds(s, [msg], [0, 1, 2, os.open("/", os.O_PATH)])
                    code = 0 if s.recv(16) == b"" else 2     # closed without an answer
                except (BrokenPipeError, ConnectionResetError):
                    code = 0                                 # closed at once
            except BaseException as exc:
                os.write(2, f"{type(exc).__name__}: {exc}\n".encode())
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.close(opath)
    finally:
        os.chmod(served.path, 0o600)
    assert os.waitstatus_to_exitcode(status) == 0
    assert served.count() == before and not marker.exists()


def test_a_daemon_socket_in_a_shared_directory_is_not_used(served, tmp_path):
    home = tmp_path / "shared"
    (home / "daemon").mkdir(parents=True)
    (home / "daemon").chmod(0o755)
    env = {**served.env, "SANDBOX_HOME": str(home)}
    # a way to the real daemon, planted in a directory others could write: never taken
    os.symlink(served.path, home / "daemon" / SOCK)
    before = served.count()
    p = subprocess.run([*served.cmd, "exec", "--", "sh", "-c", "exit 9"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 9, p.stderr               # run by the cold path instead
    assert served.count() == before
    p = subprocess.run([*served.cmd, "exec", "--", "sh", "-c", "exit 8"], cwd=ROOT,
                       env={**served.env, "SANDBOX_DAEMON": "0"}, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 8 and served.count() == before   # opted out
    if served.cmd != SANDBOX:
        return
    from sandbox.thin.client import try_exec
    old = dict(os.environ)
    try:
        os.environ.update(env)
        assert try_exec(["exec", "--", "true"]) is None       # cold start instead
        os.environ["SANDBOX_HOME"] = served.home
        os.environ["SANDBOX_DAEMON"] = "0"
        assert try_exec(["exec", "--", "true"]) is None       # opted out
    finally:
        os.environ.clear()
        os.environ.update(old)


def _has_interpreter(path: str) -> bool:
    """Whether the ELF executable at `path` names a dynamic loader (a PT_INTERP header)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2       # 64-bit
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3
               for i in range(phnum))


def test_the_compiled_client_starts_without_a_dynamic_loader_when_musl_is_there():
    """A warm `sandbox exec` starts the compiled client once: linked statically against
    musl it skips the loader's mapping of libc (~1 ms a start here,
    sandbox/_native/toolchain.py); without musl it is dynamic, and says so."""
    import shutil
    from sandbox import _native
    from sandbox._native import toolchain
    client = _native.client_path()
    if shutil.which(toolchain.MUSL) is None:
        assert _has_interpreter(client)
        pytest.skip("no musl-gcc here: the thin client is linked dynamically")
    assert not _has_interpreter(client)
    assert _has_interpreter(sys.executable)     # the check itself tells one from the other


def test_the_thin_client_imports_almost_nothing(served):
    p = served.run("exec", "--", "true", env={**served.env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert p.returncode == 0, p.stderr
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    if served.cmd != SANDBOX:   # the compiled client: no interpreter at all on this side
        assert not imported, p.stderr[-2000:]
        return
    assert "sandbox.thin.client" in imported, p.stderr[-2000:]
    # (an editable install's import hook brings re, enum and pathlib through `site`)
    for heavy in ("sandbox.cli.main", "argparse", "json", "socket", "signal",
                  "sandbox.launcher.launcher", "sandbox.policy", "typing"):
        assert heavy not in imported, heavy


def test_daemon_start_status_stop_use_the_callers_state_directory(tmp_path):
    """`sandbox daemon start` puts its socket under the caller's SANDBOX_HOME (and nowhere
    else), answers status, serves, and stops."""
    home = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["SANDBOX_HOME"] = str(home)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*SANDBOX, *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    sock = home / "daemon" / SOCK
    try:
        p = cli("daemon", "start")
        assert p.returncode == 0 and p.stdout.startswith("running pid"), (p.stdout, p.stderr)
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert stat.S_IMODE(os.lstat(home).st_mode) == 0o700
        assert cli("daemon", "status").returncode == 0
        assert cli("exec", "--", "sh", "-c", "exit 4").returncode == 4
        shown = cli("daemon", "status").stdout
        assert " served 1 " in shown and re.search(r" since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                                                   r"\(up \d+h\d\dm\) ", shown), shown
    finally:
        p = cli("daemon", "stop")
    assert p.returncode == 0 and p.stdout == "stopped\n", p.stdout
    assert not os.path.lexists(sock)
    assert cli("daemon", "status").returncode == 3


def test_start_uses_the_state_directory_of_the_environment_it_is_given(tmp_path, monkeypatch):
    """`control.start(env)` (as `sandbox bench` calls it) must not fall back to this
    process's own state directory: a daemon there would serve every `sandbox exec`
    of the user."""
    mine, theirs = tmp_path / "process-state", tmp_path / "given-state"
    monkeypatch.setenv("SANDBOX_HOME", str(mine))
    env = {**os.environ, "SANDBOX_HOME": str(theirs)}
    try:
        assert D.start(env).startswith("running pid")
        assert stat.S_ISSOCK(os.lstat(theirs / "daemon" / SOCK).st_mode)
        assert not os.path.lexists(mine / "daemon")
    finally:
        D.stop(wire.socket_path(env))
        D.stop(wire.socket_path(os.environ))
    assert not os.path.lexists(theirs / "daemon" / SOCK)


def test_a_reply_left_by_a_killed_run_is_not_taken_by_the_next(tmp_path):
    """A run SIGKILLed between its request to the shared fork server and the reply leaves
    that reply queued on the socket every run shares; the next run must not take it for
    its own. Every `Spawned` of one monitor host names the same pid, so the killed run's
    request here is one the server refuses (five descriptors, not six): taken for the
    next run's own reply, that `Refused` would fail the next run (and its own `Spawned`
    would be left for the run after it)."""
    from sandbox import protocol
    from sandbox.launcher.launcher import Launcher
    from sandbox.thin.shared import Owner
    owner = Owner()
    owner.ensure()
    lock = str(tmp_path / "forkserver.lock")
    mine: list[socket.socket] = []
    try:
        # the killed run: its request counted as sent (as ForRun does), never answered
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        owner.for_run(lock)._save(fd, 1, 0)
        os.close(fd)
        pairs = [socket.socketpair() for _ in range(2)] + \
            [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)]
        null = os.open(os.devnull, os.O_RDWR)
        theirs = [pairs[0][1].fileno(), pairs[1][1].fileno(), null, null, null]
        protocol.send(owner._sock, protocol.SpawnRequest(), theirs)   # refused: 5 fds
        os.close(null)
        for a, b in pairs:
            b.close()
            mine.append(a)
        # (not waiting for that reply: it may come only after the next run has asked)
        launcher = Launcher(forkserver=owner.for_run(lock), history=False)
        try:
            h = launcher.start(["sleep", "30.25"], workdir=str(tmp_path))
            deadline = time.monotonic() + 60
            ancestors: set[int] = set()
            while time.monotonic() < deadline and not ancestors:
                if h.done():
                    r = h.wait(0)
                    pytest.fail("the next run took the killed run's reply for its own: "
                                f"{r.status}: {r.reason}")
                for pid in os.listdir("/proc"):
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            if f.read() != b"sleep\x0030.25\x00":
                                continue
                    except OSError:
                        continue
                    chain = [int(pid)]
                    for _ in range(5):
                        try:
                            with open(f"/proc/{chain[-1]}/stat") as f:
                                chain.append(int(f.read().rsplit(")", 1)[1].split()[1]))
                        except OSError:
                            break
                    if owner.pid in chain:   # not another test's run of this very test
                        ancestors.update(chain)
                time.sleep(0.05)
            assert ancestors, "the run never started"
            assert h.pid in ancestors, "the run took another run's monitor for its own"
            h.cancel()
            assert h.wait(60).status == "cancelled"
            # and the replies are in step again: the run after it gets its own
            r2 = launcher.spawn(["true"], workdir=str(tmp_path))
            assert r2.status == "ok", r2.reason
        finally:
            launcher.close()
    finally:
        for s in mine:
            s.close()
        owner.close()


def test_a_run_meeting_a_dying_fork_server_starts_its_monitor_cold(tmp_path):
    """The race the test above cannot pin down: the daemon forked this run while its
    server was still dying (a killed process shows as a zombie before its last thread
    is gone, so `poll` saw it alive). The run's request finds no server; nothing of the
    run began, so the run starts its own monitor the cold way and still runs, once."""
    from sandbox.launcher import monitors
    from sandbox.launcher.launcher import Launcher
    from sandbox.thin.shared import ForRun
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.close()                                  # the server is gone
    gone = ForRun(mine, str(tmp_path / "forkserver.lock"), server_pid=os.getpid())
    with pytest.raises(monitors.ServerGone):
        gone.spawn([])
    launcher = Launcher(start="forkserver", forkserver=gone)
    try:
        r = launcher.spawn(["sh", "-c", "echo hi; exit 3"], policy="default",
                           workdir=str(tmp_path), capture_output=True)
    finally:
        launcher.close()
    assert (r.exit_code, r.stdout) == (3, "hi\n"), r.reason


# -- the caller's identity ----------------------------------------------------------------

def _other_groups() -> None:
    """A caller whose supplementary groups and gid are not the daemon's (`sg`, `newgrp`,
    `setpriv --groups`, a group added since the daemon started)."""
    os.setgroups([4, 27])
    os.setregid(4, 4)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to change its groups")
def test_the_callers_groups_and_gid_are_the_programs_not_the_daemons(served):
    """A warm run's program held the daemon's groups (its monitor and stubs are forks of
    the daemon's), where the cold path's holds the caller's (mapped ones; 65534 for the
    others in a user namespace): a caller without a group could reach its files through
    the daemon. The warm run must give what the cold one gives."""
    show = ["exec", "--", "sh", "-c", "id -g; id -G"]
    cold = subprocess.run([*SANDBOX, *show], cwd=ROOT, env={**served.env, "SANDBOX_DAEMON": "0"},
                          capture_output=True, text=True, timeout=120, preexec_fn=_other_groups)
    assert cold.returncode == 0, cold.stderr
    warm = subprocess.run([*served.cmd, *show], cwd=ROOT, env=served.env, capture_output=True,
                          text=True, timeout=120, preexec_fn=_other_groups)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout == cold.stdout, (warm.stdout, cold.stdout)
    assert served.run(*show).stdout == "0\n0\n"     # the daemon's own still go warm


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to change its groups")
def test_a_client_with_other_groups_that_asks_anyway_gets_nothing_run(served, tmp_path):
    """A client that skips its own check (not ours) is refused by the daemon: our uid
    with fewer groups must not get a program holding the daemon's."""
    marker = tmp_path / "ran"
    before = served.count()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([4])
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(served.path)
            msg = wire.encode("exec", ["exec", "--", "/bin/touch", str(marker)], dict(served.env))
            s.settimeout(10)
            try:
                socket.send_fds(s, [msg], [0, 1, 2, os.open("/", os.O_PATH)])
                code = 0 if s.recv(16) == b"" else 2     # closed without an answer
            except (BrokenPipeError, ConnectionResetError):
                code = 0
        except BaseException as exc:
            os.write(2, f"{type(exc).__name__}: {exc}\n".encode())
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    time.sleep(0.5)
    assert served.count() == before and not marker.exists()
