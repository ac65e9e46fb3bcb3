"""The stack limit kept for a long command line under an RLIMIT_AS memory bound."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandbox.isolation.limits import AS_THREAD_STACK, EXEC_ROOM, exec_stack
from sandbox.monitor.runspec import exec_bytes


@given(st.integers(min_value=0, max_value=64 << 20))
def test_an_execve_of_that_size_fits_a_quarter_of_the_stack(n):
    stack = exec_stack(n)
    assert stack % (1 << 20) == 0
    assert stack // 4 >= n + EXEC_ROOM                 # fs/exec.c: argv and env get 1/4
    assert stack - (1 << 20) < 4 * (n + EXEC_ROOM)     # and no more than a MiB over


def test_a_short_command_line_keeps_the_small_thread_stacks():
    assert exec_stack(exec_bytes(["python3", "-c", "pass"], {"PATH": "/usr/bin"})) \
        <= AS_THREAD_STACK


def test_exec_bytes_counts_strings_and_pointers():
    assert exec_bytes(["ab", "c"], {"K": "v"}) == (3 + 2 + 4) + 8 * (2 + 1 + 2)
    assert exec_bytes(["é"], {}) == 3 + 8 * 3          # bytes, not characters
