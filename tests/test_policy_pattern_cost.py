"""A nested request's policy patterns cost the launcher once each, and are bounded.

Comparing a child's policy with its parent's compiled each of the child's deny
globs once per parent deny rule (~70), uncached, and a pattern could be as long
as the frame: one request with a 200,000-character deny glob took 8.6 s of the
launcher's CPU in `prepare`, 3.1 s end to end; 20 requests with three such
patterns did not finish in 300 s (found by an attack probe). Now a policy path
longer than PATH_MAX (4096) is refused at load (it cannot name a path), and
each compiled glob is reused. Judged by the compilations counted.
"""
from __future__ import annotations

import uuid

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import globs, load_policy
from sandbox.policy.loader import parse_policy_data


def test_a_policy_path_longer_than_path_max_is_refused():
    with pytest.raises(PolicyError, match="4096"):
        parse_policy_data({"filesystem": {"deny": ["/tmp/*" + "x" * 5000]}}, file="<t>")
    with pytest.raises(PolicyError, match="4096"):
        parse_policy_data({"filesystem": {"read": ["/usr/" + "x" * 5000]}}, file="<t>")
    parse_policy_data({"filesystem": {"deny": ["/tmp/*" + "x" * 4000]}}, file="<t>")


@pytest.fixture
def compiled(monkeypatch) -> list[str]:
    """Every pattern globs compiles from here on (its caches emptied first)."""
    seen: list[str] = []
    real = globs._compile
    monkeypatch.setattr(globs, "_compile", lambda p, subtree: seen.append(p) or real(p, subtree))
    for fn in (globs.compile_rule, globs.compile_exact):
        getattr(fn, "cache_clear", lambda: None)()
    return seen


def test_the_ceiling_check_compiles_each_child_glob_once(compiled):
    from sandbox.launcher import prepare as P
    from sandbox.policy.confine import Ceiling
    parent = P.prepare(uuid.uuid4().hex, load_policy("default"), mode="workflow",
                       workdir=None, output_dir=None, env=None, ipc_fd=3)
    pattern = "/tmp/*" + "q" * 4000
    child = parse_policy_data({"filesystem": {"deny": [pattern]}}, file="<t>")
    try:
        P.prepare(uuid.uuid4().hex, child, mode="workflow", workdir=None, output_dir=None,
                  env=None, ipc_fd=3,
                  ceilings=(Ceiling(parent.policy, own_roots=True, what="parent"),))
    except PolicyError:
        pass
    mine = [p for p in compiled if "qqqq" in p]
    assert 0 < len(mine) <= 2, len(mine)


def test_a_nested_request_with_too_many_globs_is_refused_before_any_is_compiled(compiled):
    """207 deny globs of 4,000 characters cost the launcher 1.1 s of compiling before the
    plan's count (64) refused them (found by an attack probe): counted first now."""
    from sandbox.errors import SandboxError
    from sandbox.nested import requested_policy
    request = {"filesystem": {"deny": [f"/tmp/{i}*" + "q" * 4000 for i in range(207)]}}
    with pytest.raises((PolicyError, SandboxError), match="207 glob rules"):
        requested_policy(request, load_policy("default"))
    assert [p for p in compiled if "qqqq" in p] == []
    # at the bound, the request is a policy
    request["filesystem"]["deny"] = request["filesystem"]["deny"][:64]
    assert len(requested_policy(request, load_policy("default")).filesystem.deny) >= 64
