"""`children_alike(d)`: the policy gives every name in directory `d` one verdict.

The audit's compiled loop answers a new name in a directory by that directory's
record when this says yes (sandbox/_native/notify_fast.c, directory keys), so a
wrong yes would record a verdict the engine would not give: checked here against
the engine itself, for random policies (literal and glob rules, denies, the
sandbox areas, the launcher's own rules) and every name of a small alphabet.
"""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from sandbox.audit.verdicts import AuditEngine
from sandbox.policy import OPERATIONS, default_variables, load_policy, resolve
from sandbox.policy.model import FilesystemPolicy, Policy
from sandbox.policy.plan import FsPlan, FsRule

PARTS = ["a", "b", "c", "key", "tmp", "dev", "shm", "proc", "sys", "fs", "cgroup", "x.pem"]
NAMES = [*PARTS, "zz", "a.pem", "b-key", ".hidden"]   # "zz" is named by no rule
rel = st.lists(st.sampled_from(PARTS), min_size=1, max_size=3).map("/".join)
literal = rel.map(lambda p: "/" + p)
glob = st.tuples(st.lists(st.sampled_from(PARTS), max_size=2).map("/".join),
                 st.sampled_from(["*", "*.pem", "*key*", "**/x.pem", "b*/c"])
                 ).map(lambda t: "/" + "/".join(x for x in t if x))
rules = st.lists(literal | glob, max_size=4).map(tuple)


def _engine(read, write, exec_, deny, extra) -> AuditEngine:
    pol = resolve(Policy(name="alike", filesystem=FilesystemPolicy(
        read=read, write=write, exec=exec_, deny=deny)), default_variables("/w", "/o"))
    plan = FsPlan(rules=tuple(FsRule(p, rule="launcher: runtime") for p in extra))
    return AuditEngine(pol, plan)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(rules, rules, rules, rules, st.lists(literal, max_size=2).map(tuple),
       st.lists(st.sampled_from(PARTS), max_size=3).map(lambda p: "/" + "/".join(p)))
def test_alike_children_get_one_verdict_per_operation(read, write, exec_, deny, extra, d):
    eng = _engine(read, write, exec_, deny, extra)
    if not eng.children_alike(d):
        return
    base = d.rstrip("/") + "/"
    for op in OPERATIONS:
        seen = {(v.allowed, v.rule) for v in (eng.decide(op, base + n) for n in NAMES)}
        assert len(seen) == 1, (op, d, seen)


def test_the_strict_policy_keys_library_directories_not_its_guarded_ones():
    """Not vacuous: where an import looks (a library directory) every name is alike;
    where a rule, a deny glob, a view parent or a sandbox area names a child, not."""
    pol = resolve(load_policy("strict"), default_variables("/w", "/o"))
    eng = AuditEngine(pol, FsPlan())
    assert eng.children_alike("/usr/lib/python3.11")
    assert eng.children_alike("/usr/lib/python3.11/json")
    assert not eng.children_alike("/etc")            # /etc/shadow* and other denies
    assert not eng.children_alike("/etc/ssh")        # /etc/ssh/*key*
    assert not eng.children_alike("/usr")            # /usr/bin, /usr/lib: their own rules
    assert not eng.children_alike("/")               # /tmp, /proc, /dev
    assert not eng.children_alike("/tmp/x")          # a sandbox area
    assert not eng.children_alike("/sys/fs")         # the cgroup view
    launcher = AuditEngine(pol, FsPlan(rules=(FsRule("/srv/code/pkg", rule="launcher"),)))
    assert not launcher.children_alike("/srv/code")  # a launcher rule's parent
    assert launcher.children_alike("/srv/code/pkg")


@settings(derandomize=True, max_examples=400, deadline=None)
@given(rules, rules, rules, rules,
       st.lists(st.sampled_from(PARTS), max_size=3).map(lambda p: "/" + "/".join(p)))
def test_the_answer_is_the_one_of_every_rule_paths_directory(read, write, exec_, deny, d):
    """The engine no longer keeps a set of the directories of all its rule paths (~2 KiB
    per live run in the monitor host): its view parents and its denies' directories
    give the same answer, checked here against that set, made as it was."""
    import os
    eng = _engine(read, write, exec_, deny, ()).engine
    keys = [*eng.deny_literal, *eng.allow_literal, *eng.parents]
    named = d != "/" and d in {os.path.dirname(k) for k in keys}
    if named:
        assert not eng.children_alike(d)
    else:
        under = d + "/"
        prefixes = [g[0] for g in eng.deny_globs] + [g[0] for g in eng.allow_globs]
        from sandbox.policy.engine import CGROUP_VIEW, area_of
        guarded = d == "/" or area_of(under + "x") is not None or \
            (under + "x").startswith(CGROUP_VIEW + "/") or CGROUP_VIEW.startswith(under)
        assert eng.children_alike(d) == (not guarded and
                                         not any(under.startswith(p) for p in prefixes))
