"""The spec of `is_narrower_or_equal` is `decide`: property tests (issue 10 finding 1).

For random pairs of resolved policies where the comparison says the child is
narrower than or equal to the parent, every (operation, path) that `decide`
allows for the child on a host object is allowed for the parent. The paths tried include
ones no host has (files created later): a child's glob must not reach what a
parent's deny glob covers. Fixed seed and example count (CI).
"""
from __future__ import annotations

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sandbox.policy import decide
from sandbox.policy.compare import differences, is_narrower_or_equal
from sandbox.policy.engine import OPERATIONS, normalize
from sandbox.policy.model import FilesystemPolicy, Policy

ROOTS = ["", "/tmp", "/dev", "/a", "${OUTPUT}", "${OUTPUT}"]
OUTPUT = "/a/o"            # what ${OUTPUT} stands for in both policies
SEGS = ["a", "b", "ab", ".x", "k.key", "o"]
GLOB_SEGS = ["*", "?", "a*", "*.key", "[ab]", "**", ".*"]


@st.composite
def rule_path(draw, globbing=True):
    if draw(st.integers(0, 30)) == 0:
        return "/"
    root = draw(st.sampled_from(ROOTS))
    n = draw(st.integers(1, 3))
    parts = []
    for _ in range(n):
        k = draw(st.integers(0, 9))
        if globbing and k < 3:
            parts.append(draw(st.sampled_from(GLOB_SEGS)))
        elif k == 3:
            parts.append("..")
        else:
            parts.append(draw(st.sampled_from(SEGS)))
    return root + "/" + "/".join(parts)


def concrete(policy: Policy) -> Policy:
    """`policy` with ${OUTPUT} substituted and each path normalised lexically: what
    the paths name once expanded, whatever the resolver makes of them."""
    def conv(paths):
        return tuple(normalize(p.replace("${OUTPUT}", OUTPUT)) for p in paths)
    fs = policy.filesystem
    return policy.replace(filesystem=FilesystemPolicy(
        read=conv(fs.read), write=conv(fs.write), exec=conv(fs.exec), deny=conv(fs.deny)))


def rules(max_size=3):
    return st.lists(rule_path(), max_size=max_size).map(tuple)


@st.composite
def policy(draw, name):
    return Policy(name=name, filesystem=FilesystemPolicy(
        read=draw(rules()), write=draw(rules()), exec=draw(rules()), deny=draw(rules(2))))


@st.composite
def narrowed(draw):
    """A parent and a child drawn to be often (not always) narrower: the child's
    rules are picked from the parent's and sub-paths of them, its denies a superset."""
    parent = draw(policy("parent"))
    pf = parent.filesystem
    def pick(pool):
        out = []
        for _ in range(draw(st.integers(0, 3))):
            if pool and draw(st.integers(0, 5)) > 0:
                base = draw(st.sampled_from(pool))
                for _ in range(draw(st.integers(0, 2))):
                    base = base + "/" + draw(st.sampled_from(SEGS + GLOB_SEGS + [".."] * 6))
                out.append(base)
            else:
                out.append(draw(rule_path()))
        return tuple(out)

    deny = tuple(dict.fromkeys((*pf.deny, *draw(rules(2)))))
    if pf.deny and draw(st.integers(0, 5)) == 0:
        deny = deny[1:]        # sometimes drop one of the parent's denies
    child = Policy(name="child", filesystem=FilesystemPolicy(
        read=pick([*pf.read, *pf.write, *pf.exec]), write=pick(pf.write), exec=pick(pf.exec),
        deny=deny))
    return parent, child


def _fs(**kw) -> Policy:
    return Policy(name="x", filesystem=FilesystemPolicy(**kw))


# issue 10 finding 1, as it was found: text after ${OUTPUT} climbing out of it
ATTACK = (_fs(write=("${OUTPUT}",)), _fs(write=("${OUTPUT}/../../etc/cron.d",)))
# a rule outside /tmp does not grant host paths inside it (the sandbox's /tmp is private)
GLOB_INTO_TMP = (_fs(read=("/",)), _fs(read=("/t*/a",)))


def probe_paths(parent: Policy, child: Policy) -> list[str]:
    """Paths around every rule of both: the rule, children and grandchildren of its
    literal prefix with every segment (glob matches included), its parents."""
    out = {"/", "/tmp", "/dev", "/a"}
    names = [*SEGS, "zz", "a.key", ".hidden"]
    for p in (*parent.filesystem.__dict__["read"], *parent.filesystem.write, *parent.filesystem.exec,
              *parent.filesystem.deny, *child.filesystem.read, *child.filesystem.write,
              *child.filesystem.exec, *child.filesystem.deny):
        lit = "/".join(s if not any(c in s for c in "*?[") else names[0] for s in p.split("/"))
        segs = p.split("/")
        for i in range(1, len(segs) + 1):
            prefix = "/".join(s if not any(c in s for c in "*?[") else "a" for s in segs[:i]) or "/"
            out.add(prefix)
            for n in names:
                out.add(prefix.rstrip("/") + "/" + n)
                for m in ("a", ".x", "k.key"):
                    out.add(prefix.rstrip("/") + "/" + n + "/" + m)
        out.add(lit)
    return sorted(out)


def host_object(verdict) -> bool:
    """Does this verdict let the sandbox at a *host* object? Verdicts about what every
    sandbox gets of its own (its private /tmp and /dev/shm, its /proc, its /dev nodes)
    are about different objects in the child and the parent: not comparable."""
    return verdict.rule.startswith(("filesystem.", "sandbox: parent of"))


def assert_decide_implied(parent: Policy, child: Policy) -> None:
    """Compared as given (raw, ${OUTPUT} kept), decided once expanded."""
    parent, child = concrete(parent), concrete(child)
    for path in probe_paths(parent, child):
        for op in OPERATIONS:
            c = decide(child, op, path)
            if c.allowed and host_object(c):
                p = decide(parent, op, path)
                assert p.allowed, (f"{op} {path}: child allows ({c.rule}), parent refuses "
                                   f"({p.rule})\nchild={child.filesystem}\nparent={parent.filesystem}")


def test_narrower_or_equal_implies_decide_allows_no_more():
    seen: list[bool] = []

    @settings(derandomize=True, max_examples=200, deadline=None, database=None)
    @given(narrowed())
    @example(ATTACK)
    @example(GLOB_INTO_TMP)
    def check(pair):
        parent, child = pair
        ok, _ = is_narrower_or_equal(child, parent)
        seen.append(ok)
        if ok:
            assert_decide_implied(parent, child)

    check()
    # not vacuous: the fixed sample holds both answers, and many narrower pairs
    assert sum(seen) >= 20 and not all(seen), (sum(seen), len(seen))


@settings(derandomize=True, max_examples=100, deadline=None)
@given(policy("parent"), policy("child"))
def test_unrelated_pairs_too(parent, child):
    if is_narrower_or_equal(child, parent)[0]:
        assert_decide_implied(parent, child)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(policy("p"))
def test_every_policy_is_narrower_or_equal_to_itself(p):
    # ... except a policy with a '..' path: it is never judged narrower, even than itself
    fs = p.filesystem
    dotdot = any(".." in x.split("/") for x in (*fs.read, *fs.write, *fs.exec, *fs.deny))
    assert (differences(p, p) != []) == dotdot


LIMIT = st.one_of(st.none(), st.integers(1, 10))


@st.composite
def settings_only(draw, name):
    from sandbox.policy.model import AuditPolicy, EnvPolicy, Limits, NetworkPolicy, SyscallPolicy
    calls = ["ptrace", "bpf", "mount", "kexec_load"]
    allow = tuple(draw(st.lists(st.sampled_from(calls), unique=True)))
    return Policy(
        name=name, best_effort=draw(st.booleans()),
        filesystem=FilesystemPolicy(deny=draw(rules(2)), tmp_size=draw(st.integers(1, 5))),
        network=NetworkPolicy(mode=draw(st.sampled_from(["none", "loopback", "host"]))),
        limits=Limits(cpu=draw(LIMIT), wall=draw(LIMIT), memory=draw(LIMIT),
                      file_size=draw(LIMIT), processes=draw(LIMIT), open_files=draw(LIMIT)),
        syscalls=SyscallPolicy(profile=draw(st.sampled_from(["default", "strict"])), allow=allow,
                               deny=tuple(c for c in draw(st.lists(st.sampled_from(calls),
                                                                   unique=True))
                                          if c not in allow),
                               on_violation=draw(st.sampled_from(["errno", "kill"]))),
        audit=AuditPolicy(files=draw(st.sampled_from(["none", "denied", "all"])),
                          records=draw(st.integers(1, 10))),
        env=EnvPolicy(keep=tuple(draw(st.lists(st.sampled_from(["A", "B", "C"]), unique=True)))))


@settings(derandomize=True, max_examples=200, deadline=None, database=None)
@given(settings_only("child"), settings_only("parent"))
def test_derive_is_never_looser_than_the_parent(child, parent):
    """A nested run's limits, network, syscalls, audit, env, tmp size and denies come
    out of `derive` no looser than its parent's, whatever the child asked for."""
    from sandbox.policy.confine import derive
    derived = derive(child, parent)
    assume(not any(".." in p.split("/") for p in (*parent.filesystem.deny,
                                                  *child.filesystem.deny)))
    assert differences(derived, parent) == []
    # and never looser than what the child asked for either
    assert differences(derived, child.replace(filesystem=derived.filesystem)) == []
