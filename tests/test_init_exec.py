"""An exec'd program's PID 2 is forked by the compiled init, not by PID 1's Python.

PID 1 (Python, after the containment sequence) searches PATH and replaces itself
with `sandbox-init --exec`, which forks PID 2 and execs the program: no fork of
the sandboxee's ~25 MiB Python, whose copy only ran up to its exec
(docs/benchmarks-journal.md). What must hold: the program still gets the shell's signal
state, its session and terminal, its descriptors and nothing of the init's; the
init keeps none of the program's; an exec failure still reaches the launcher as
the same typed `ExecError`, whose halves the sandboxee encodes and the init
joins around the errno.
"""
from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings, strategies as st

from sandbox import protocol
from sandbox.launcher.launcher import Launcher
from sandbox.protocol import ExecError, ExecFailure
from sandbox.sandboxee.entry import exec_error_halves

pytestmark = pytest.mark.isolation


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60), st.booleans(),
       st.sampled_from([0, 1, 2, 13, 20, 40, 255, 4095]))
def test_the_halves_joined_around_any_errno_decode_to_that_exec_error(program, path,
                                                                      searched, err):
    """Whatever the names hold (quotes, backslashes, a '"errno":0' of their own, lone
    surrogates of undecodable bytes), the init's join is the message of that errno."""
    head, tail = exec_error_halves(program, path, searched)
    got = protocol.from_datagram(head + str(err).encode() + tail, ExecError)
    assert got == ExecError(ExecFailure(program=program, path=path, errno=err,
                                        searched=searched))
    assert protocol.exec_message(got.failure) == f"{program}: {os.strerror(err)}"


def test_the_programs_parent_is_the_compiled_init_holding_only_its_pipe():
    """Judged from the host: PID 2's parent is `sandbox-init --exec`, with no descriptor
    but its status pipe; the program has its stdio and none of the setup sockets."""
    with Launcher(capture_output=True) as launcher:
        handle = launcher.start(["sleep", "30"], policy="strict")
        try:
            prog = init = 0
            deadline = time.monotonic() + 20
            while not prog and time.monotonic() < deadline:
                for pid in os.listdir("/proc"):
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            args = f.read().split(b"\0")
                        with open(f"/proc/{pid}/stat") as f:
                            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
                    if args[:2] == [b"sleep", b"30"] and ppid:
                        with open(f"/proc/{ppid}/cmdline", "rb") as f:
                            if f.read().startswith(b"sandbox-init\0--exec\0"):
                                prog, init = int(pid), ppid
                time.sleep(0.05)
            assert prog, "no sleep under a sandbox-init --exec"
            try:
                held = os.listdir(f"/proc/{init}/fd")
            except PermissionError:   # the init is non-dumpable: only root may look
                assert os.geteuid() != 0
            else:
                assert len(held) == 1
            assert sorted(int(fd) for fd in os.listdir(f"/proc/{prog}/fd"))[:3] == [0, 1, 2]
            kinds = {os.readlink(f"/proc/{prog}/fd/{fd}") for fd in os.listdir(f"/proc/{prog}/fd")}
            assert not any("anon_inode" in k for k in kinds)
        finally:
            handle.cancel()
            handle.wait()


def test_the_program_starts_with_the_shells_signal_state_and_its_own_process_group(py):
    code = ("import os\n"
            "st = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
            "print(st['SigBlk'].strip(), st['SigIgn'].strip(), os.getpgid(0) == os.getpid(),"
            " os.getpid(), os.getppid(), os.getsid(0))\n")
    with Launcher(capture_output=True) as launcher:
        r = launcher.spawn([py, "-I", "-S", "-c", code], policy="default")
    assert r.status == "ok", r.reason
    blocked, ignored, own_group, pid, ppid, sid = r.stdout.split()
    # Python ignores SIGPIPE and SIGXFSZ itself once started: nothing else is ignored
    assert int(blocked, 16) == 0
    assert int(ignored, 16) & ~((1 << 12) | (1 << 24)) == 0   # SIGPIPE, SIGXFSZ bits
    # its own process group in the init's session (no terminal): not an orphaned group,
    # so a relayed ^Z stops it (init.c start_program)
    assert (own_group, pid, ppid, sid) == ("True", "2", "1", "1")


@pytest.mark.parametrize("argv, code, says", [
    (["no-such-program-xyz"], 127, "no-such-program-xyz: command not found on the sandbox's PATH"),
    (["/etc/hostname"], 126, "cannot execute /etc/hostname: the policy grants no exec under /etc"),
    # quotes, a backslash, UTF-8, the cut's own text, an undecodable byte: all reach it,
    # the byte as itself (os.fsdecode's surrogate), not the text "\\udcff"
    (['a "b" \\c \u00e9 "errno":0 \udcff'], 127,
     'a "b" \\c \u00e9 "errno":0 \udcff: command not found'),
])
def test_an_exec_failure_is_the_same_explained_report(argv, code, says):
    with Launcher(capture_output=True) as launcher:
        r = launcher.spawn(argv, policy="default")
    assert (r.status, r.exit_code) == ("error", code), r.reason
    assert r.reason.startswith(says), r.reason
