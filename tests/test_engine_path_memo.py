"""An Engine that keeps each path's operation-independent part (`Engine._path`: normal
form, ancestors, covering deny) gives every verdict an engine deciding from scratch
gives, in any order of operations and paths."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from sandbox.policy import OPERATIONS, default_variables, resolve
from sandbox.policy.engine import Engine
from sandbox.policy.model import FilesystemPolicy, Policy

POLICY = resolve(Policy(name="memo", filesystem=FilesystemPolicy(
    read=("/usr", "/etc", "/data/ro", "/tmp/in"), write=("/data", "/dev/shm/x"),
    exec=("/usr/bin", "/opt/*/bin"),
    deny=("/etc/shadow*", "/data/secret", "/etc/ssh/*key*", "/usr/**/private"))),
    default_variables("/tmp/w", "/tmp/o"))

parts = st.sampled_from(["usr", "bin", "etc", "shadow", "shadow-", "ssh", "host_key", "data",
                         "ro", "secret", "opt", "x", "private", "tmp", "in", "dev", "shm",
                         "proc", "..", ".", "", "null", "pts"])
paths = st.lists(parts, max_size=5).map(lambda p: "/" + "/".join(p)) | \
    st.sampled_from(["relative", "//etc//shadow", "/etc/shadow/../passwd", "/"])


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OPERATIONS), paths), min_size=1, max_size=30))
def test_the_kept_path_part_changes_no_verdict(asks: list[tuple[str, str]]) -> None:
    kept = Engine(POLICY)                 # keeps verdicts and paths' parts
    fresh = Engine(POLICY, cache=False)   # keeps neither
    for op, path in asks + asks[::-1]:
        assert kept.decide(op, path) == fresh.decide(op, path), (op, path)
    assert not fresh._paths
