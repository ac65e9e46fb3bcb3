"""stdin, terminals and the program's stdio, judged from the host.

The program's stdin, stdout and stderr are pipes (or a pty) the monitor made:
never a descriptor of the caller's, whose file it could truncate, chmod,
re-time or lock (issue 11 finding 4).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pty_run import (at_a_terminal, ctrl_z_stops_the_job, run_on_pty, stopped_job_keeps_its_terminal,
                     type_keys)
from stdin_probes import pipe_split, socket_stdin_left, to_dev_full

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANDBOX = [sys.executable, "-m", "sandbox"]


def sandbox(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    return subprocess.run([*SANDBOX, *args], cwd=ROOT, text=True, timeout=120, **kw)


# -- stdin ---------------------------------------------------------------------------

def test_piped_stdin_reaches_the_program():
    p = sandbox("exec", "--", "cat", input="hi\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, "hi\n", "")


def _shell_with_file_stdin(script: str, text: str, tmp_path, env=None) -> str:
    """`script` run by sh with stdin a file holding `text`; its stdout."""
    f = tmp_path / "stdin.txt"
    f.write_text(text)
    with open(f) as stdin:
        p = subprocess.run(["sh", "-c", script], stdin=stdin, capture_output=True, text=True,
                           cwd=ROOT, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


SANDBOX_SH = " ".join(f"'{a}'" for a in SANDBOX)


def test_a_file_stdin_keeps_what_the_program_did_not_read(tmp_path):
    """A caller's stdin that is a file is left where the program stopped reading: the
    relay read the whole list ahead, so `while read` went round once."""
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    loop = f'while read f; do {SANDBOX_SH} exec -- echo "item $f"; done'
    assert _shell_with_file_stdin(loop, "a\nb\nc\n", tmp_path, env) == \
        "item a\nitem b\nitem c\n"
    part = f"{SANDBOX_SH} exec -- head -c 5 >/dev/null; head -c 8"
    assert _shell_with_file_stdin(part, "".join(f"{i}\n" for i in range(10000)),
                                  tmp_path, env) == "\n3\n4\n5\n6"
    whole = f"{SANDBOX_SH} exec -- cat >/dev/null; echo \"left: $(cat | wc -c)\""
    assert _shell_with_file_stdin(whole, "x" * 200_000, tmp_path, env) == "left: 0\n"


# as much as its pipe takes without waiting (one page while lent: a blocking write of
# more waits for a reader, itself, as it would on a full pipe directly)
EVIL_WRITER = ("import os; fd = os.open('/proc/self/fd/0', os.O_WRONLY | os.O_NONBLOCK)\n"
               "try:\n    while os.write(fd, b'x' * 60000): pass\n"
               "except BlockingIOError: pass")


def test_a_program_cannot_make_the_caller_read_its_stdin_again(tmp_path, py):
    """What is handed back is bounded by what this run's relay took: a program that
    writes into its own stdin pipe (reopened through /proc/self/fd/0) looks as if it
    read nothing, never more. Judged from the caller's loop: each line once."""
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    runs = (f'n=0; while read f; do n=$((n+1)); [ $n -gt 20 ] && break; '
            f'{SANDBOX_SH} exec -- {py} -c "{EVIL_WRITER}"; echo "line $f"; done')
    lines = "".join(f"{i:04d}\n" for i in range(1, 13))
    want = "".join(f"line {i:04d}\n" for i in range(1, 13))
    assert _shell_with_file_stdin(runs, lines, tmp_path, env) == want
    assert _pipeline(f"printf '{lines}' | {{ {runs}; }}", env) == want


def _pipeline(script: str, env=None) -> str:
    p = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_a_pipe_stdin_is_taken_only_as_the_program_reads_it():
    """A caller's pipe is lent (tee) and taken as the program reads: a program that
    reads nothing leaves it to the next reader, one that reads part leaves the rest."""
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    sbx = SANDBOX_SH + " exec --"
    assert _pipeline(f'printf "a\\nb\\nc\\n" | while read f; do {sbx} echo "item $f"; done',
                     env) == "item a\nitem b\nitem c\n"
    assert _pipeline(f'printf "l1\\nl2\\nl3\\n" | {{ {sbx} head -c 3 >/dev/null; cat; }}',
                     env) == "l2\nl3\n"
    assert _pipeline(f'printf "x\\ny\\n" | {{ {sbx} cat >/dev/null; wc -c; }}', env).strip() == "0"
    # a reader gets all of a stream longer than one lending, and input that comes late
    assert _pipeline(f"seq 1 200000 | {sbx} wc -l", env).strip() == "200000"
    assert _pipeline(f"(echo a; sleep 0.3; echo b) | {sbx} cat", env) == "a\nb\n"
    assert _pipeline(f"yes | {sbx} head -n 2", env) == "y\ny\n"


def test_a_repl_reads_its_input(py):
    p = sandbox("exec", "--", py, "-I", "-i", "-q", input="x = 6 * 7\nprint(x)\n")
    assert p.returncode == 0 and "42" in p.stdout, p.stderr


def test_stdin_none_is_an_immediate_end_of_input():
    # The caller's stdin stays open and silent: the program must not wait on it.
    proc = subprocess.Popen([*SANDBOX, "exec", "--stdin", "none", "--", "cat"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        out = proc.stdout.read()   # end of stream once the sandbox is gone
        assert proc.wait(timeout=60) == 0 and out == ""
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def test_the_api_takes_stdin_as_bytes_or_none(launcher):
    data = b"line\n" * 50000          # more than a pipe holds
    r = launcher.spawn(["wc", "-c"], stdin=data)
    assert (r.status, r.stdout.strip()) == ("ok", str(len(data)))
    r = launcher.spawn(["cat"])      # the default: an empty, closed stdin
    assert (r.status, r.stdout) == ("ok", "")


def test_the_api_types_stdin_bytes_into_a_tty(launcher):
    """With tty=True the program's stdin is its pty: stdin bytes were dropped (and a
    `cat` waited forever); now they are typed in, then the end (^D)."""
    r = launcher.spawn(["sh", "-c", "read a; read b; echo got:$a:$b; cat; echo end"],
                       tty=True, stdin=b"one\ntwo\n", timeout=60)
    assert r.status == "ok", r.reason
    assert "got:one:two\r\nend\r\n" in r.stdout, r.stdout
    r = launcher.spawn(["sh", "-c", "cat; echo end"], tty=True, timeout=60)
    assert (r.status, r.stdout) == ("ok", "end\r\n")


STOPS = """
import os, signal, sys, time
parent = os.getpid()
if os.fork() == 0:        # continues its parent, again and again, while it lives
    while True:
        try:
            os.kill(parent, signal.SIGCONT)
            os.kill(1, signal.SIGCONT)   # the init too: it must not take this for `fg`
        except ProcessLookupError:
            os._exit(0)
        time.sleep(0.001)
for _ in range(300):
    os.kill(parent, signal.SIGSTOP)
print("stopped 300 times")
"""


def test_a_program_stopping_itself_in_a_loop_tells_the_launcher_once(launcher, monkeypatch):
    """With a pty, each stop of the program is its caller's job's to follow (^Z): the
    init reports it, the monitor passes it on. A program that stops itself in a loop,
    its own child continuing it (and signalling the init), must cost the trusted side
    one report until the caller continues the job, not one per stop (300 here)."""
    from sandbox.launcher import session as session_mod
    seen: list[str] = []
    parse = session_mod.protocol.parse

    def counting(type_, payload, *accept):
        seen.append(type_)
        return parse(type_, payload, *accept)
    monkeypatch.setattr(session_mod.protocol, "parse", counting)
    r = launcher.spawn([sys.executable, "-I", "-c", STOPS], tty=True, timeout=60)
    assert (r.status, "stopped 300 times" in r.stdout) == ("ok", True), (r.reason, r.stdout)
    assert seen.count("program_stopped") == 1, seen


def test_all_output_reaches_the_caller_before_the_exit(tmp_path):
    out = tmp_path / "out"
    with open(out, "wb") as f:
        p = subprocess.run([*SANDBOX, "exec", "--", "sh", "-c",
                            "head -c 3000000 /dev/zero; echo; echo end >&2"],
                           cwd=ROOT, stdout=f, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0 and out.stat().st_size == 3000001 and p.stderr == b"end\n"


ALTERNATE = "import sys\nfor i in range(300):\n    print('out', i, flush=True)\n" \
    "    print('err', i, file=sys.stderr, flush=True)\n"


@pytest.mark.parametrize("daemon", ["1", "0"])
def test_output_and_errors_sent_to_one_place_keep_their_order(tmp_path, daemon):
    """`2>&1`: stdout and stderr went through two relayed pipes, so a combined log
    held all of one before the other (found by a new-user probe). Sent to one place,
    they share one pipe; sent apart, they stay apart."""
    env = {**os.environ, "SANDBOX_DAEMON": daemon}
    p = subprocess.run([*SANDBOX, "exec", "--", sys.executable, "-c", ALTERNATE], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120, env=env)
    want = "".join(f"out {i}\nerr {i}\n" for i in range(300))
    assert (p.returncode, p.stdout) == (0, want)
    with open(tmp_path / "log", "w") as log:
        subprocess.run([*SANDBOX, "exec", "--", sys.executable, "-c", ALTERNATE], cwd=ROOT,
                       stdout=log, stderr=subprocess.STDOUT, timeout=120, env=env, check=True)
    assert (tmp_path / "log").read_text() == want
    apart = sandbox("exec", "--", sys.executable, "-c", ALTERNATE, env=env)
    assert apart.stdout == "".join(f"out {i}\n" for i in range(300))
    assert apart.stderr == "".join(f"err {i}\n" for i in range(300))


# -- the caller's descriptors stay the caller's (issue 11 finding 4) ------------------

TAMPER = r"""
import fcntl, os, stat
for fd in (0, 1, 2):
    if stat.S_ISCHR(os.fstat(fd).st_mode):
        continue   # a device (the host's /dev/null if this regressed): never touch it
    for act in (lambda: os.ftruncate(fd, 0), lambda: os.fchmod(fd, 0),
                lambda: os.utime(fd, (0, 0)),
                lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)):
        try:
            act()
        except OSError:
            pass
print("tried", flush=True)
"""


def test_the_program_cannot_touch_the_files_behind_the_callers_stdio(tmp_path, py):
    log, data = tmp_path / "service.log", tmp_path / "input.txt"
    log.write_text("earlier lines of a shared log\n")
    data.write_text("input\n")
    os.chmod(log, 0o640)
    os.chmod(data, 0o604)
    before = {p: os.stat(p) for p in (log, data)}
    with open(log, "a") as out, open(data) as inp:
        p = subprocess.run([*SANDBOX, "exec", "--", py, "-I", "-c", TAMPER], cwd=ROOT,
                           stdin=inp, stdout=out, stderr=out, timeout=120)
    assert p.returncode == 0
    assert log.read_text() == "earlier lines of a shared log\ntried\n"
    assert data.read_text() == "input\n"
    for path, st in before.items():
        now = os.stat(path)
        assert now.st_mode == st.st_mode, path
        assert now.st_mtime != 0 and now.st_atime != 0, path
    with open(log) as f:   # no lock left, and none could be taken on our file
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_api_default_stdin_is_not_the_hosts_dev_null(launcher, py):
    # Before: the launcher's own /dev/null descriptor; as root, the program owned it.
    # Only its times are tried here (a mode change would break the host if it worked).
    before = os.stat("/dev/null")
    r = launcher.spawn([py, "-I", "-c",
                        "import os\ntry:\n os.utime(0, (1, 1))\nexcept OSError: pass\n"
                        "print(os.readlink('/proc/self/fd/0'))"])
    assert r.status == "ok", r.reason
    assert os.stat("/dev/null").st_mtime == before.st_mtime
    assert r.stdout.startswith("pipe:"), r.stdout


# -- signals from the caller -----------------------------------------------------------

def test_sigterm_to_sandbox_exec_reaches_the_program():
    script = 'trap "echo got TERM; exit 5" TERM; echo ready; while :; do sleep 0.05; done'
    proc = subprocess.Popen([*SANDBOX, "exec", "--", "sh", "-c", script], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 5
        assert proc.stdout.read() == "got TERM\n"
    finally:
        proc.kill()
        proc.wait()


DASH_SAYS = {signal.SIGHUP: ("Hangup\n",), signal.SIGQUIT: ("Quit\n",)}


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 5), (signal.SIGHUP, 6),
                                      (signal.SIGINT, 7), (signal.SIGQUIT, 8)])
def test_a_signal_to_the_callers_process_group_is_the_programs(sig, code):
    """`timeout`, `kill -- -PGID`, a closed terminal's SIGHUP and a service manager
    stopping a group signal every process of the caller's group, the monitor that
    `sandbox exec` started included: the program gets the signal once (relayed),
    and the run ends as the program ends, not as a lost monitor (exit 1)."""
    name = signal.Signals(sig).name[3:]
    script = (f'trap "echo got {name}; exit {code}" {name}; echo ready; '
              'while :; do sleep 0.05; done')
    proc = subprocess.Popen([*SANDBOX, "exec", "--", "sh", "-c", script], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, sig)
        assert proc.wait(timeout=60) == code, proc.stderr.read()
        assert proc.stdout.read() == f"got {name}\n"
        # ^\\ and a hangup reach the loop's `sleep` too, as directly; dash then says how
        # it died when it reaps it before running its trap: a race of dash's own (an
        # strace'd direct run says "Hangup" too, bwrap --unshare-pid 1 to 3 times in 10)
        assert proc.stderr.read() in ("", *DASH_SAYS.get(sig, ())), sig
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# Every signal a caller may send to its whole process group whose default is to end a
# process (not the faults a process raises on itself: SEGV, BUS, FPE, ILL, TRAP, SYS)
GROUP_KILLERS = ["HUP", "INT", "QUIT", "USR1", "USR2", "PIPE", "ALRM", "TERM", "STKFLT",
                 "XCPU", "XFSZ", "VTALRM", "PROF", "IO", "PWR", "RTMIN", "RTMAX"]
COUNTING = r"""
import signal, sys, time
got = []
signal.signal(int(sys.argv[1]), lambda s, f: got.append(s))
print("ready", flush=True)
while not got:
    time.sleep(0.02)
time.sleep(1)   # room for a second delivery, which must not come
print("got", len(got), flush=True)
sys.exit(3)
"""


def _signal_number(name: str) -> int:
    return int(getattr(signal, "SIG" + name))


@pytest.mark.parametrize("name", GROUP_KILLERS)
def test_every_signal_to_the_callers_group_reaches_the_program_once(name, py):
    """`kill -USR1 -- -PGID` (and any signal a caller sends its group whose default is
    to terminate): a direct run's program gets it once and its handler runs; no process
    of the sandbox's in the caller's group (the launcher, the monitor host, its zygote,
    a stub) may die of it, and the program must not get it twice (probe4 H7: USR1 and
    USR2 killed the cold monitor, exit 1)."""
    proc = subprocess.Popen([*SANDBOX, "exec", "--", py, "-c", COUNTING,
                             str(_signal_number(name))], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, _signal_number(name))
        assert proc.wait(timeout=60) == 3, proc.stderr.read()
        assert proc.stdout.read() == "got 1\n"
        assert proc.stderr.read() == ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ignoring_hup_blocking_usr1() -> None:
    """The caller's state of `nohup` (SIGHUP ignored) with SIGUSR1 blocked besides."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


SIGNAL_STATE = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]


def test_the_callers_ignored_and_blocked_signals_are_the_programs():
    """SIG_IGN and the signal mask survive an execve: `nohup PROGRAM` keeps SIGHUP
    ignored in PROGRAM. Under sandbox exec the init started the program with every
    signal at its default (probe4 H6: `trap '' INT QUIT` showed SigIgn 0 inside)."""
    direct = subprocess.run(SIGNAL_STATE, capture_output=True, text=True,
                            preexec_fn=_ignoring_hup_blocking_usr1)
    sandboxed = sandbox("exec", "--", *SIGNAL_STATE, preexec_fn=_ignoring_hup_blocking_usr1)
    assert sandboxed.returncode == 0, sandboxed.stderr
    assert sandboxed.stdout == direct.stdout
    assert "0000000000000005" in direct.stdout   # HUP and QUIT: the test means something


def test_a_nohup_run_survives_the_sighup_of_its_group():
    """`nohup sandbox exec ... &` then the terminal closes: the program lives on, as
    directly (it was killed, 129)."""
    proc = subprocess.Popen([*SANDBOX, "exec", "--", "sh", "-c",
                             "echo ready; read x; echo survived"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_ignoring_hup_blocking_usr1)
    try:
        assert proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, signal.SIGHUP)
        out, err = proc.communicate("go\n", timeout=60)
        assert (proc.returncode, out, err) == (0, "survived\n", "")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


DIES_OF = {"INT": "kill -INT $$", "QUIT": "kill -QUIT $$", "TERM": "kill -TERM $$",
           "exit130": "exit 130"}


@pytest.mark.parametrize("how", list(DIES_OF))
def test_the_caller_sees_a_death_by_ctrl_c_as_the_programs(how):
    """A program that dies of SIGINT or SIGQUIT (^C, ^\\ at the terminal) makes
    `sandbox exec` die of it too, as its shell expects of a direct child: bash aborts a
    loop only when the child died of the ^C (probe4 M2: exit 130, and the loop went
    on). Other deaths keep the exit code 128+N; a plain `exit 130` stays an exit."""
    direct = subprocess.run(["sh", "-c", DIES_OF[how]]).returncode
    p = sandbox("exec", "--", "sh", "-c", DIES_OF[how])
    expected = {"INT": -signal.SIGINT, "QUIT": -signal.SIGQUIT, "TERM": 143,
                "exit130": 130}[how]
    assert p.returncode == expected, p.stderr
    assert direct == (expected if how != "TERM" else -signal.SIGTERM)


def test_ctrl_c_stops_the_callers_shell_loop():
    """probe4 M2's reproduction (pipes, -T: the terminal signals its foreground group,
    the shell with its child; bash aborts its loop only if the child died of it too)."""
    script = ("for i in 1 2 3; do echo in$i; " + " ".join(SANDBOX) +
              " exec -T -- sleep 20; echo next $i; done; echo loop-done")
    out, _ = run_on_pty(["/bin/bash", "-c", script], {**os.environ, "SANDBOX_DAEMON": "0"},
                        [("in1", lambda fd: (time.sleep(1), os.write(fd, b"\x03")))])
    assert b"next" not in out and b"loop-done" not in out, out


GRANDCHILD = r"""
import os, signal, sys, time
signal.signal(int(sys.argv[1]), lambda s, f: (os.write(1, b"child got %d\n" % s), os._exit(0)))
os.write(1, b"ready\n")   # not print: the handler may come while print holds stdout
time.sleep(30)
"""


def group_signal_reaches(argv: list[str], sig: int, env=None, both: bool = False):
    """Run `argv` (a shell that runs GRANDCHILD and waits for it) in a new process group,
    signal the group once it is ready; what it printed (`both`: stdout and stderr)."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_no_core)
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        time.sleep(0.2)    # a shell that printed it reaches its `wait`
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return (out, err) if both else out


# the signals a terminal sends its foreground process group: ^C, ^\\, a hangup
TERMINAL_SIGNALS = [signal.SIGINT, signal.SIGQUIT, signal.SIGHUP]


@pytest.mark.parametrize("sig", TERMINAL_SIGNALS)
def test_a_terminal_signal_to_the_callers_group_reaches_the_programs_children(sig, py):
    """^C (or `timeout -s INT`) is sent to a whole process group: a direct run's program
    and its children all get it. The sandbox relayed it to the program's process only
    (probe4 M1: `timeout -s INT 1 ... sh -c 'sleep 5'` took 5 s); the init now passes
    SIGINT to the program's process group."""
    # the shell ignores it (its end would end the sandbox, and the child with it)
    shell = ["sh", "-c", f'trap "" {int(sig)}; {py} -c "$0" {int(sig)}; echo after',
             GRANDCHILD]
    direct = group_signal_reaches(shell, sig)
    assert f"child got {int(sig)}\n" in direct
    sandboxed = group_signal_reaches([*SANDBOX, "exec", "--", *shell], sig)
    assert f"child got {int(sig)}\n" in sandboxed


def _no_core() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def ends_as_direct(prefix: list[str], sig: int, env=None, rounds: int = 6) -> None:
    """A shell waiting for its child, its group signalled (a hangup, ^\\): both die of it
    and the shell says nothing, as directly (the sandbox's own "sandbox:" line aside); in
    the sandbox dash printed "Hangup" when it outlived its child (the signal then went to
    the group: probe4) or, sent to PID 2 alone, the child never got it."""
    shell = ["sh", "-c", "echo ready; sleep 30 & wait; echo after"]

    def once(argv: list[str]) -> tuple[str, list[str]]:
        out, err = group_signal_reaches(argv, sig, env, both=True)
        return out, [line for line in err.splitlines() if not line.startswith("sandbox:")]
    assert once(shell) == ("", [])
    for _ in range(rounds):
        assert once([*prefix, "--", *shell]) == ("", [])


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_a_hangup_of_the_callers_group_ends_the_program_as_directly(sig):
    ends_as_direct([*SANDBOX, "exec"], sig)


GROUP_CALLER = r"""
import os, signal
from sandbox import Launcher
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append("TERM"))   # drain, as `sandbox worker`
with Launcher() as launcher:
    handle = launcher.start(["sh", "-c", "read line; sleep 0.5; echo done $line"], stdin=b"x\n",
                            capture_output=True)
    launcher.spawn(["true"])                   # the monitor host and its zygote are up
    os.killpg(0, signal.SIGTERM)               # a service manager stopping the group
    r = launcher.spawn(["sh", "-c", "echo after"], capture_output=True)
    first = handle.wait()
print(got, first.status, first.stdout.strip(), r.status, r.stdout.strip())
"""


def test_a_caller_that_handles_sigterm_keeps_its_runs_when_its_group_gets_it():
    """A library caller that drains on SIGTERM (`sandbox worker`) gets to finish its
    runs: the monitor host in its process group does not die of the same signal."""
    p = subprocess.run([sys.executable, "-c", GROUP_CALLER], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, start_new_session=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["['TERM']", "ok", "done", "x", "ok", "after"], p.stdout


# -- a terminal of its own (-t) --------------------------------------------------------

def test_tty_gives_the_program_its_own_terminal_with_the_callers_size():
    out, code = run_on_pty([*SANDBOX, "exec", "-t", "--", "sh", "-c", "tty; stty size; exit 3"])
    lines = out.decode().replace("\r", "").splitlines()
    assert code == 3, out
    assert lines[0] == "/dev/console" and lines[1] == "33 101", out


def test_a_run_with_a_terminal_can_still_make_ptys():
    """The run's pty was bound at its host name in /dev/pts, so the sandbox's own devpts
    was not mounted: with -t (and so at any interactive terminal) `script` and
    pty.openpty() failed ("out of pty devices"). It is at /dev/console now."""
    code = "import os, pty; m, s = pty.openpty(); print(os.ttyname(s), os.ttyname(0))"
    out, status = run_on_pty([*SANDBOX, "exec", "-t", "--", "python3", "-c", code])
    assert status == 0 and out.replace(b"\r", b"").endswith(b"/dev/pts/0 /dev/console\n"), out


@pytest.mark.parametrize("given", [b"", b"one\ntwo\n", b"no newline at the end"],
                         ids=["empty", "lines", "partial"])
def test_tty_with_piped_input_ends_it_as_a_user_would(given):
    """`echo hi | sandbox exec -t -- cat`: the program reads a terminal, and the
    caller's input ends. It hung forever: the end of the pipe never reached the pty.
    Now the relay types ^D (the pty's VEOF) whenever everything was read, as a pipe's
    end is there at every read: after a partial line, the first hands the line over;
    a second reader gets an end of its own."""
    p = subprocess.run([*SANDBOX, "exec", "-t", "--", "sh", "-c",
                        "cat; echo; echo cat-ended; cat; echo again"],
                       input=given, capture_output=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    out = p.stdout.replace(b"\r\n", b"\n")
    assert out.count(given.rstrip(b"\n")) >= 1 and out.endswith(b"cat-ended\nagain\n"), out


@pytest.mark.parametrize("argv,says", [(["python3", "-q"], b"42"),
                                       (["bash", "--norc", "--noprofile", "-i"], b"42")],
                         ids=["python", "bash"])
def test_tty_with_piped_input_ends_a_readline_repl(argv, says):
    """A REPL reads its terminal raw, a line at a time (readline): ^D typed while it
    waits on an empty line is its end, whatever mode the terminal was in before."""
    line = b"print(6*7)\n" if argv[0] == "python3" else b"echo $((6*7))\n"
    p = subprocess.run([*SANDBOX, "exec", "-t", "--", *argv], input=line,
                       capture_output=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert says in p.stdout, p.stdout


def test_an_interactive_terminal_gets_a_tty_without_asking():
    at_a_terminal(SANDBOX)


def test_tty_with_input_from_dev_null_runs():
    p = subprocess.run([*SANDBOX, "exec", "-t", "--", "sh", "-c", "cat; exit 4"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60, cwd=ROOT)
    assert p.returncode == 4, p.stderr


def test_ctrl_c_on_the_terminal_interrupts_the_program():
    out, code = run_on_pty([*SANDBOX, "exec", "-t", "--", "sh", "-c", "echo go; sleep 30"],
                           steps=[("go", type_keys(b"\x03"))])
    assert code == -signal.SIGINT, out   # as the program died: of the ^C (probe4 M2)


def test_ctrl_z_stops_the_program_and_fg_resumes_it(py):
    ctrl_z_stops_the_job([*SANDBOX, "exec"], py, {**os.environ, "SANDBOX_DAEMON": "0"})


@pytest.mark.parametrize("how", [{}, {"bg": True}, {"pty": True}, {"pty": True, "bg": True}],
                         ids=["fg", "bg-then-fg", "pty", "pty-bg-then-fg"])
def test_a_job_stopped_and_resumed_still_reads_its_terminal(py, how):
    stopped_job_keeps_its_terminal([*SANDBOX, "exec"], py,
                                   {**os.environ, "SANDBOX_DAEMON": "0"}, **how)


def test_an_interactive_repl_on_the_terminal(py):
    out, code = run_on_pty([*SANDBOX, "exec", "-t", "--", py, "-I", "-q"],
                           steps=[(">>>", type_keys(b"print(6 * 7)\nexit(4)\n"))])
    assert code == 4 and b"42" in out, out


def test_a_caller_with_closed_stdio_still_runs():
    # fd 0 closed at start may later name another of the launcher's files: never relayed.
    cmd = f"exec 0<&-; {sys.executable} -m sandbox exec -- sh -c 'cat; echo done >&2' 1>&-"
    p = subprocess.run(["sh", "-c", cmd], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert (p.returncode, p.stderr.splitlines()[-1:]) == (0, ["done"]), p.stderr


# Which of 0, 1, 2 the program has open, written to the first one open of 2, 1
OPEN_STD = ("import fcntl, os\n"
            "def st(fd):\n"
            "    try:\n        fcntl.fcntl(fd, fcntl.F_GETFD)\n        return 'open'\n"
            "    except OSError:\n        return 'closed'\n"
            "os.write(2 if st(2) == 'open' else 1, ' '.join(st(fd) for fd in (0, 1, 2)).encode())")
CLOSED_CASES = {"stdin": "<&-", "stdout": ">&-", "stderr": "2>&-", "all": "<&- >&- 2>&-"}


def closed_as_direct(prefix: list[str], closing: str, py: str, env=None) -> None:
    """A caller's closed 0, 1 or 2 is closed for the program, as for a direct one: a
    read or write of it fails (EBADF), where the sandbox gave an empty /dev/null."""
    def run(cmd: list[str]) -> tuple[int, str]:
        line = " ".join(shlex.quote(a) for a in cmd)
        p = subprocess.run(["sh", "-c", f"{line} {closing}; echo \"rc=$?\""], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout + "|" + p.stderr
    direct = run([py, "-c", OPEN_STD])
    assert run([*prefix, "--", py, "-c", OPEN_STD]) == direct
    shell = ["sh", "-c", "read x; echo read=$? >&2; cat; echo cat=$? >&2"]
    if "<&-" in closing and "2>&-" not in closing:   # the brief's: `cat <&-`, `read x <&-`
        assert run([*prefix, "--", *shell]) == run(shell)


@pytest.mark.parametrize("closing", list(CLOSED_CASES.values()), ids=list(CLOSED_CASES))
def test_a_callers_closed_std_descriptor_is_closed_for_the_program(closing, py):
    closed_as_direct([*SANDBOX, "exec"], closing, py, env={**os.environ, "SANDBOX_DAEMON": "0"})


# -- the relays of the shared hub (sandbox.monitor.stdio_hub) -------------------------

def test_a_reader_that_closes_early_ends_the_program_with_sigpipe():
    # Before the hub the relay stopped copying but kept the pipe open: `yes` waited
    # in write until the wall-clock limit. Now it gets SIGPIPE, as with no sandbox.
    p = subprocess.run(["sh", "-c", f"{sys.executable} -m sandbox exec -- yes | head -2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.stdout == "y\ny\n", p
    proc = subprocess.Popen([*SANDBOX, "exec", "--", "yes"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(65536)
        proc.stdout.close()
        assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
        assert proc.stderr.read() == b""   # a reader that left: no line, as in a shell
    finally:
        proc.kill()
        proc.wait()


def test_a_program_flooding_a_reader_that_takes_nothing_does_not_grow_the_monitor():
    proc = subprocess.Popen([*SANDBOX, "exec", "--", "cat", "/dev/zero"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = proc.stdout.fileno()
        for _ in range(3000):            # until the pipe to us is full
            if struct.unpack("i", fcntl.ioctl(out, termios.FIONREAD, b"\0" * 4))[0] >= 65536:
                break
            time.sleep(0.01)
        first = _tree_rss(proc.pid)
        peak = max(_tree_rss(proc.pid) for _ in _sampled(20))
        assert proc.poll() is None       # the program waits in write: nothing piles up
        assert peak - first <= 1024, (first, peak)   # KiB, over the whole process tree
        got = 0
        while got < 20 << 20:            # and the stream still flows, all zeros
            chunk = proc.stdout.read(65536)
            assert chunk and not chunk.strip(b"\0")
            got += len(chunk)
    finally:
        proc.kill()
        proc.wait()


def _sampled(n: int):
    for i in range(n):
        time.sleep(0.05)
        yield i


def _tree_rss(pid: int) -> int:
    """Resident KiB of `pid` and its descendants but the program (`cat`), from /proc."""
    from sandbox.monitor.tree import children_map
    kids = children_map()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == "cat":
                    continue
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def test_stdin_from_a_file_and_output_to_a_socket(tmp_path):
    import socket
    data = tmp_path / "in"
    data.write_bytes(b"0123456789" * 300000)
    mine, theirs = socket.socketpair()
    with open(data, "rb") as inp:
        proc = subprocess.Popen([*SANDBOX, "exec", "--", "sh", "-c", "wc -c; cat /dev/null"],
                                cwd=ROOT, stdin=inp, stdout=theirs)
    theirs.close()
    out = b""
    while chunk := mine.recv(65536):
        out += chunk
    assert proc.wait(timeout=60) == 0
    assert out.strip() == b"3000000"


def test_large_input_and_both_outputs_at_once():
    script = "tee /dev/stderr | wc -c"
    p = subprocess.run([*SANDBOX, "exec", "--", "sh", "-c", script], cwd=ROOT,
                       input=b"a" * 5_000_000, capture_output=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == b"5000000"
    assert p.stderr == b"a" * 5_000_000


def test_a_terminal_stdin_without_tty_is_relayed():
    out, code = run_on_pty([*SANDBOX, "exec", "--", "sh", "-c", "read line; echo got:$line"],
                           steps=[("", type_keys(b"hello\n"))])
    assert code == 0 and b"got:hello" in out, out


def test_a_background_caller_with_a_terminal_stdin_is_not_stopped():
    # `sandbox exec -- cat &` at a shell: the relay's read of the terminal is refused
    # (the monitor ignores SIGTTIN): the program sees end of input, nothing stops.
    script = (f"import os, sys\npid = os.fork()\nif pid == 0:\n    os.setpgid(0, 0)\n"
              f"    os.execv({sys.executable!r}, {[*SANDBOX, 'exec', '--', 'sh', '-c', 'cat; echo done']!r})\n"
              "_, st = os.waitpid(pid, os.WUNTRACED)\n"
              "print('stopped' if os.WIFSTOPPED(st) else f'exit {os.waitstatus_to_exitcode(st)}')\n"
              "if os.WIFSTOPPED(st):\n    os.kill(pid, 9)\n")
    out, code = run_on_pty([sys.executable, "-c", script], steps=[("", type_keys(b"typed\n"))])
    assert b"exit 0" in out and b"done" in out, out


def test_tty_window_size_changes_reach_the_program():
    script = ('trap \'stty size; exit 7\' WINCH; echo ready; '
              'while :; do sleep 0.05; done')

    def resize(fd: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

    out, code = run_on_pty([*SANDBOX, "exec", "-t", "--", "sh", "-c", script],
                           steps=[("ready", resize)])
    assert code == 7 and b"40 120" in out, out


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(min_value=0, max_value=60_000), data=st.data(),
       kind=st.sampled_from(["file", "pipe"]))
def test_what_the_program_reads_and_what_is_left_make_the_input(tmp_path, size, data, kind):
    """The class of the two fixes above, as a property: a program that reads K bytes of
    an input of N leaves exactly the other N - K, in order, to the next reader, from a
    file or from a pipe (whose N fits one lending: the relay copies ahead once the
    program has read all it was lent, as `cat` would)."""
    take = data.draw(st.integers(min_value=0, max_value=size))
    blob = bytes((i * 7 + size) % 251 for i in range(size))
    src = tmp_path / f"in-{size}-{take}"
    src.write_bytes(blob)
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    inner = f"{SANDBOX_SH} exec -- head -c {take}; cat"
    script = f"{{ {inner}; }} < '{src}'" if kind == "file" else f"cat '{src}' | {{ {inner}; }}"
    p = subprocess.run(["sh", "-c", script], capture_output=True, cwd=ROOT, timeout=120,
                       env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == blob, (kind, size, take, len(p.stdout))


def test_bytes_that_are_not_utf8_pass_as_bytes(tmp_path):
    """An argument or working directory that is not UTF-8 reached the program as the
    text `\\udcff` (exit 0, wrong output), or failed with an encoder's message; a grant
    that is not UTF-8 (a policy is text) is one line naming its flag."""
    weird = tmp_path / os.fsdecode(b"d\xfe")
    weird.mkdir()
    p = subprocess.run([*SANDBOX, "exec", "--", "sh", "-c", 'printf "%s|" "$1"; pwd', "sh",
                        os.fsdecode(b"a\xffb")], cwd=weird, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"a\xffb|" + os.fsencode(str(weird)) + b"\n"
    p = subprocess.run([*SANDBOX, "exec", "--env", os.fsdecode(b"X=c\xfed"), "--", "true"],
                       capture_output=True, timeout=60, cwd=ROOT)
    assert p.returncode == 125 and p.stderr.count(b"\n") == 1, p.stderr
    assert b"--env" in p.stderr and b"not UTF-8" in p.stderr


def test_a_program_hidden_from_the_run_first_on_path_is_named():
    """The caller's PATH named a program under a directory the policy hides (pyenv's
    shims, ~/bin): the sandbox's PATH search went on to /usr/bin's, exit 0, and
    nothing said so (found by a new-user probe). With -v (or at a terminal) a note
    names the hidden one; without, a script's stderr is untouched. (Not under /tmp:
    the sandbox's own /tmp hides the host's without a refusal.)"""
    import pathlib
    import shutil
    import tempfile
    top = pathlib.Path(tempfile.mkdtemp(dir="/var/tmp"))
    bindir = top / "bin"
    bindir.mkdir()
    mine = bindir / "true"
    mine.write_text("#!/bin/sh\necho mine\n")
    mine.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin"}
    p = subprocess.run([*SANDBOX, "exec", "-v", "--policy", "strict", "--", "true"],
                       env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0 and p.stdout == "", p
    assert f"sandbox: note: {mine}, first on your PATH, is not in the sandbox's view" in p.stderr
    quiet = subprocess.run([*SANDBOX, "exec", "--policy", "strict", "--", "true"],
                           env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    shutil.rmtree(top)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet


PIPE_SIZES = [1, 4095, 4096, 4097, 16384, 65535, 65536, 65537, 81920, 1 << 20, (1 << 20) + 1]


@settings(max_examples=14, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_pipe_stdin_read_in_any_pattern_leaves_exactly_the_rest(tmp_path, data):
    """The lending of a pipe (sandbox/monitor/stdin_lend.py) as a property, past one
    lending: a program reading N bytes (around and beyond the pipe capacities 4 KiB,
    64 KiB, 1 MiB) in reads of one size, of a pipe the caller fills in writes of
    various sizes, takes exactly the first N and leaves the rest, byte for byte, to
    the next reader. The relay copied ahead once 64 KiB were read: `head -c 100000`
    of 5 MB left 4819776 bytes, not 4900000."""
    n = data.draw(st.one_of(st.sampled_from(PIPE_SIZES), st.integers(0, 1_200_000)), "n")
    bs = data.draw(st.sampled_from([1, 512, 4096, 4097, 65536, 100_000]), "read size")
    if bs == 1:
        n = min(n, 70_000)   # dd reading a byte at a time: keep the example quick
    extra = data.draw(st.sampled_from([0, 1, 4096, 70_000, 300_000]), "left over")
    pieces = data.draw(st.lists(st.sampled_from([1, 100, 4096, 5000, 65536, 200_000]),
                                min_size=1, max_size=4), "write sizes")
    blob = os.urandom(n + extra)
    count, rest = divmod(n, bs)
    reader = f"dd bs={bs} count={count} iflag=fullblock status=none"
    if rest:
        reader += f"; dd bs={rest} count=1 iflag=fullblock status=none"
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    taken, left, err = pipe_split(SANDBOX, env, blob, reader, pieces, tmp_path)
    assert (len(taken), len(left)) == (n, extra), err
    assert taken == blob[:n] and left == blob[n:], err


@pytest.mark.parametrize("reader, want", [
    ("read x; echo got $x", "0 b'got first\\n' b'second\\nthird\\n' 100013"),
    ("head -c 3", "0 b'fir' b'st\\nsecond\\nthi' 100016"),
])
def test_a_socket_stdin_keeps_what_the_program_did_not_read(reader, want):
    """A stream socket as stdin is lent as a pipe is (recv with MSG_PEEK), taken only as
    the program reads: `read x` left nothing of it, where directly the other lines
    stay in the socket for the next reader (finding H2)."""
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    assert socket_stdin_left([], env, reader) == want   # directly, for reference
    assert socket_stdin_left([*SANDBOX, "exec", "--"], env, reader) == want


@pytest.mark.parametrize("program, redirect", [
    ("echo hi", ">/dev/full"),
    ("head -c 1000000 /dev/zero", ">/dev/full"),
    ("echo hi >&2", "2>/dev/full"),
    ("echo hi; echo ho >&2", ">/dev/full 2>&1"),
])
def test_a_write_error_on_the_callers_output_is_not_swallowed(program, redirect):
    """Finding H4: stdout to /dev/full exited 0 with nothing said (a large writer got a
    silent 141), where directly the program's write fails and it exits 1. The relay's
    failed write is reported: a nonzero exit and one line naming the stream and the
    error (on stderr, when stderr is not the one that failed)."""
    env = {**os.environ, "SANDBOX_DAEMON": "0"}
    direct, _ = to_dev_full([], env, program, redirect)
    assert direct != 0
    code, err = to_dev_full([*SANDBOX, "exec", "--"], env, program, redirect)
    assert code == 1, err
    if "2>" not in redirect:
        assert err.count("No space left on device") == 1, err
        assert "sandbox: error: " in err and "stdout" in err, err
