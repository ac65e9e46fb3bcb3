"""Everyday workloads under `strict` and `default`, compared with their direct run.

See tests/compat/workloads.py for the workloads, expectations.py for the
intended and known differences, and docs/compatibility.md for the matrix
(made by ``python -m compat.matrix`` from the tests directory, with
bubblewrap from the same run).
"""
from __future__ import annotations

import functools

import pytest

from compat.expectations import INTENDED, INTENDED_UNDER_RLIMIT_AS, KNOWN_BROKEN, POLICIES
from compat.harness import Outcome, available, memory_mechanism, run, verdict
from compat.workloads import WORKLOADS

pytestmark = [pytest.mark.slow, pytest.mark.compat]


@functools.lru_cache(maxsize=None)
def mechanism(policy: str) -> str:
    return memory_mechanism(policy)


def intended(name: str, policy: str) -> str | None:
    """Why (name, policy) is meant to differ here, or None."""
    if (name, policy) in INTENDED:
        return INTENDED[name, policy]
    if (name, policy) in INTENDED_UNDER_RLIMIT_AS and mechanism(policy) == "rlimit":
        return INTENDED_UNDER_RLIMIT_AS[name, policy]
    return None


@functools.lru_cache(maxsize=None)
def direct(name: str) -> Outcome:
    return run("direct", next(w for w in WORKLOADS if w.name == name))


def _cases():
    for w in WORKLOADS:
        for policy in POLICIES:
            marks = []
            if (w.name, policy) in KNOWN_BROKEN:
                marks.append(pytest.mark.xfail(reason=KNOWN_BROKEN[w.name, policy], strict=True))
            yield pytest.param(w, policy, id=f"{w.name}-{policy}", marks=marks)


@pytest.mark.parametrize("workload, policy", list(_cases()))
def test_workload(workload, policy):
    if not available(workload):
        pytest.fail(f"{workload.name} needs {', '.join(workload.needs)} on the host "
                    "(scripts/install.sh installs them)")
    ref, got = direct(workload.name), run(policy, workload)
    assert ref.code == 0 or workload.name.startswith(("kill", "die", "abort", "trap")), \
        f"the direct run itself failed: {ref.brief()}"
    outcome = verdict(ref, got)
    why = intended(workload.name, policy)
    if why is not None:
        assert outcome == "fails", (f"intended difference ({why}) must fail loudly, "
                                    f"got {outcome}: {got.brief()}")
    else:
        assert outcome == "match", f"{outcome}: {got.brief()} (direct: {ref.brief()})"


def test_no_known_difference_is_stale():
    """Every expectation names a workload that exists (no stale entries hiding a gap)."""
    names = {w.name for w in WORKLOADS}
    for name, policy in list(INTENDED) + list(INTENDED_UNDER_RLIMIT_AS) + list(KNOWN_BROKEN):
        assert name in names and policy in POLICIES
