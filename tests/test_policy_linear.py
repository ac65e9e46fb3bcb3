"""A policy's rule lists are read in work linear in their length.

Found by the service probe (2026-12-07): the loader and the variable expansion kept
each list's rules unique with a list's `in`, quadratic in the rules. The service now
bounds an inline policy's size, but a nested spawn's request (parse_policy_data, up to
a 1 MiB frame: ~80,000 short rules) reaches the launcher unbounded, which would
have spent minutes comparing them. Judged by counting the comparisons of the rules
themselves (a str whose == counts), not by a clock.
"""
from __future__ import annotations

from sandbox.policy import default_variables, resolve
from sandbox.policy.loader import parse_policy_data


class Counted(str):
    calls = 0

    def __eq__(self, other: object) -> bool:
        Counted.calls += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_a_long_rule_list_is_read_in_linear_work(tmp_path):
    n = 3000
    rules = [Counted(f"/data/f{i}") for i in range(n)] + [Counted("/data/f7")]   # one repeat
    Counted.calls = 0
    policy = parse_policy_data({"extends": ["strict"], "filesystem": {"read": rules}})
    assert Counted.calls < 4 * n, Counted.calls    # a list's `in`: n * n / 2 = 4.5 million
    read = policy.filesystem.read
    assert [r for r in read if r.startswith("/data/")] == [f"/data/f{i}" for i in range(n)]
    resolved = resolve(policy, default_variables(str(tmp_path), str(tmp_path / "out")))
    assert len([r for r in resolved.filesystem.read if r.startswith("/data/")]) == n
