"""Keys typed ahead at a terminal reach a `sandbox exec -t` program as they would a direct one.

Found by the everyday probe (2026-12-07): `script -qec "sandbox exec -- python3 -c
'...sys.stdin.read()...'" /dev/null </dev/null` printed ^@ and hung where directly it
printed ''. A terminal made raw hands over its pending lines with each end-of-input
(^D) turned into a NUL byte; the program read the NUL and waited for an end that never
came. Judged on a real pty: the whole screen of the sandboxed run against the direct
run's, cold and through a daemon; the typed lines are echoed once.

The keys are typed before the command starts, deterministically: a shell reads a
first line ("go") byte by byte and then execs the command, which finds the rest
(whole lines, then ^D) waiting in the terminal's canonical queue.
"""
from __future__ import annotations

import os
import shlex
import sys

import pytest

from cli_env import SANDBOX, cli_env, own_daemon, served
from pty_run import run_on_pty

READ_ALL = "import sys; print(repr(sys.stdin.read()))"


def _screen(command: list[str], keys: bytes, env: dict[str, str]) -> tuple[bytes, int]:
    shell = f"read -r go; exec {shlex.join(command)}"
    return run_on_pty(["/bin/sh", "-c", shell], env,
                      [("", lambda fd: os.write(fd, b"go\n" + keys))], timeout=120)


CASES = {
    "end of input alone": b"\x04",
    "lines then end of input": b"line one\nline two\n\x04",
    "a line ended by ^D, then end of input": b"abc\x04\x04",
}


@pytest.mark.isolation
@pytest.mark.parametrize("keys", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("path", ["cold", "daemon"])
def test_typed_ahead_lines_and_end_of_input_reach_the_program(keys, path, tmp_path):
    direct, code = _screen([sys.executable, "-I", "-c", READ_ALL], keys, cli_env())
    assert code == 0 and b"'" in direct, direct
    command = [*SANDBOX, "exec", "-t", "--", sys.executable, "-I", "-c", READ_ALL]
    if path == "cold":
        screen, code = _screen(command, keys, cli_env())
    else:
        with own_daemon(str(tmp_path / "state")) as env:
            before = served(env)
            screen, code = _screen(command, keys, env)
            assert served(env) == before + 1
    assert code == 0, screen
    assert b"\x00" not in screen and b"^@" not in screen, screen
    assert screen == direct, (screen, direct)
