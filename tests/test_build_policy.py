"""`build` runs what a build makes (everyday probe 3, E8).

`build` is "run my build or test suite", but its private /tmp was `noexec`
(`scratch_exec` unset): a compiled test program or a tool built in /tmp could
not run (exit 126), and worse, an activated venv in /tmp silently ran the
system's pip (bash skips a PATH entry it may not execute, and under
`files = "denied"` the monitor does not see access(2) to make that loud).
Judged against the direct run with the compatibility suite's harness (cold
path, fresh work directory, same environment).
"""
from __future__ import annotations

import pytest

from compat.harness import run, verdict
from compat.workloads import WORKLOADS
from sandbox.policy import load_policy

pytestmark = pytest.mark.isolation
BY_NAME = {w.name: w for w in WORKLOADS}


@pytest.mark.parametrize("name", ["gcc-run", "venv-pip", "pytest"])
def test_build_runs_what_it_builds_in_tmp_as_directly(name):
    w = BY_NAME[name]
    ref, got = run("direct", w), run("build", w)
    assert ref.code == 0, ref.brief()
    assert verdict(ref, got) == "match", f"{got.brief()} (direct: {ref.brief()})"


def test_build_keeps_the_rest_of_its_promise():
    """Only the private /tmp became executable: the work directory stays read-only there
    (copy-on-write is default's), the output directory noexec."""
    pol = load_policy("build")
    assert pol.filesystem.scratch_exec is True and pol.filesystem.workdir == "direct"
    w = BY_NAME["workdir-write"]
    assert run("direct", w).code == 0 and run("build", w).code != 0
