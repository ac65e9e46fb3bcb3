"""Records of paths that go through /proc magic links, `..` after links, or end in /proc.

Probe 1, F2: the resolver normalised the raw spelling lexically first and kept
whatever landed in /proc "as spelled" with `sandbox: /proc` (allowed), so
`/proc/self/cwd/x`, `/proc/self/fd/N/../../x` and `/tmp/L/../../proc/x` were
recorded under names the kernel never opened, a refused read of /etc/shadow as
allowed, a write that succeeded as denied, and under files = "denied" a refused
`/proc/self/root/etc/shadow` not at all. Now the record names the object the
kernel opened (judged here from the host: the inode the program got) and the
verdict is the policy's on that object.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sandbox.audit
from test_audit_run import audit_launcher as launcher   # noqa: F401 (a fixture)
from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy

pytestmark = pytest.mark.isolation


def _policy(files: str):
    pol = load_policy("default").replace(audit=AuditPolicy(files=files))
    return pol.replace(filesystem=replace(pol.filesystem, workdir="direct"))


def _tree(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "a" / "b" / "c" / "d").mkdir(parents=True)
    (work / "data.txt").write_text("topsecret")
    (work / "proc").symlink_to(work)
    return str(work), str(out)


# the head of a program that tries calls and prints what each gave (or its errno)
ATTEMPT = r"""
import json, os, sys
work, out = sys.argv[1], sys.argv[2]
res = {}
def attempt(key, fn):
    try:
        res[key] = fn()
    except OSError as e:
        res[key] = e.errno
"""

SPELLINGS = ATTEMPT + r"""
os.chdir(work)
attempt("cwd_read", lambda: open("/proc/self/cwd/data.txt").read())
attempt("thread_self", lambda: open("/proc/thread-self/cwd/data.txt").read())
os.chdir(out)
attempt("cwd_write", lambda: open("/proc/self/cwd/written_via_cwd", "w").write("x"))
os.chdir("/etc")
attempt("shadow_cwd", lambda: open("/proc/self/cwd/shadow").read())
attempt("shadow_root", lambda: open("/proc/self/root/etc/shadow").read())
fd = os.open(work + "/a/b/c/d", os.O_PATH)
attempt("fd_dotdot", lambda: open("/proc/self/fd/%d/../../../../data.txt" % fd).read())
os.symlink(work + "/a/b/c", "/tmp/L")     # /tmp/L/../../.. is `work`, holding proc -> work
attempt("link_dotdot", lambda: open("/tmp/L/../../../proc/data.txt").read())
attempt("own_stat", lambda: len(open("/proc/self/stat").read()) > 0)
print(json.dumps(res))
"""


def run_attempts(launcher, tmp_path, py, prog: str):
    """Run an ATTEMPT program under files = "all": (work, out, its results, the records)."""
    work, out = _tree(tmp_path)
    r = launcher.spawn([py, "-I", "-c", prog, work, out], policy=_policy("all"),
                       workdir=work, output_dir=out)
    assert r.status == "ok", (r.reason, r.stderr)
    return work, out, json.loads(r.stdout), sandbox.audit.records(r.run_id, db=launcher.audit_db)


def test_proc_spellings_are_recorded_as_the_object_opened(launcher, tmp_path, py):
    work, out, res, recs = run_attempts(launcher, tmp_path, py, SPELLINGS)
    # what the kernel did, seen from the program and the host
    assert res["cwd_read"] == res["thread_self"] == res["fd_dotdot"] == "topsecret"
    assert res["link_dotdot"] == "topsecret"
    assert res["shadow_cwd"] == res["shadow_root"] == 13      # EACCES
    assert os.path.isfile(os.path.join(out, "written_via_cwd"))
    data = os.path.join(work, "data.txt")
    reads = [x for x in recs if x["path"] == data and x["operation"] == "read"]
    assert reads and all(x["verdict"] == "allowed" for x in reads)
    assert sum(x["count"] for x in reads) >= 4, reads
    created = [x for x in recs if x["path"] == os.path.join(out, "written_via_cwd")]
    assert [(x["operation"], x["verdict"]) for x in created] == [("create", "allowed")]
    shadow = [x for x in recs if x["path"] == "/etc/shadow"]
    assert shadow and all(x["verdict"] == "denied" for x in shadow)
    assert sum(x["count"] for x in shadow) == 2
    lies = [x for x in recs if x["path"].startswith(("/proc/self/cwd", "/proc/self/root",
                                                     "/proc/thread-self", "/proc/data.txt"))
            or x["path"] == "/data.txt" or "/fd/" in x["path"] and "data.txt" in x["path"]]
    assert lies == []
    # a name in /proc reached through `self` alone keeps it: the record's pid says whose
    assert res["own_stat"] is True
    assert [(x["operation"], x["verdict"]) for x in recs if x["path"] == "/proc/self/stat"] \
        == [("read", "allowed")]


def test_refusals_through_proc_root_are_in_the_denied_list(launcher, tmp_path):
    work, out = _tree(tmp_path)
    prog = ("cat /proc/self/root/etc/shadow; cat /proc/self/root/root/.bashrc; "
            "cat /proc/thread-self/root/etc/gshadow; true")
    r = launcher.spawn(["/bin/sh", "-c", prog], policy=_policy("denied"), workdir=work,
                       output_dir=out)
    assert r.status == "ok", (r.reason, r.stderr)
    denied = {d["path"] for d in r.denied}
    assert {"/etc/shadow", "/root/.bashrc", "/etc/gshadow"} <= denied, r.denied


# -- the property: random chains of links, `..` and /proc prefixes ----------------------------

FLAG_BITS = (os.O_NONBLOCK, os.O_NOFOLLOW, os.O_APPEND, 0o100000)   # 16 distinct opens
BASE_FLAGS = os.O_NOCTTY | os.O_DSYNC | os.O_CLOEXEC   # os.open adds O_CLOEXEC


def _chain_tree(work: str) -> None:
    """Directories a, a/b, a/b/c under `work`, each with a file `f`, and the links
    `_links` names: relative, absolute, `..` after a link, and plain links whose
    targets go through /proc magic links."""
    dirs = [work, f"{work}/a", f"{work}/a/b", f"{work}/a/b/c"]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/f", "w") as fh:
            fh.write(d)
    os.symlink("..", f"{work}/a/up")
    os.symlink("..", f"{work}/a/b/c/up")
    os.symlink(work, f"{work}/a/b/c/top")
    os.symlink("b/c", f"{work}/a/deep")
    os.symlink("/proc/self/cwd", f"{work}/a/b/cwd")          # the program's cwd is `work`
    os.symlink("/proc/self/root" + work + "/a", f"{work}/root_a")
    os.symlink("/proc/self/cwd/a/b", f"{work}/a/b/c/cwdb")


def _links(work: str) -> dict[str, dict[str, str]]:
    return {
        work: {"root_a": f"{work}/a"},
        f"{work}/a": {"up": work, "deep": f"{work}/a/b/c"},
        f"{work}/a/b": {"cwd": work},
        f"{work}/a/b/c": {"up": f"{work}/a/b", "top": work, "cwdb": f"{work}/a/b"},
    }


def _subdirs(work: str) -> dict[str, list[str]]:
    return {work: ["a"], f"{work}/a": ["b"], f"{work}/a/b": ["c"], f"{work}/a/b/c": []}


PREFIXES = ("work", "cwd", "thread-self", "fd", "root")


@st.composite
def chains(draw, work: str):
    """(prefix, steps): a walk from `work` that stays in the tree, and the real directory
    its final `f` is in (computed on the host)."""
    prefix = draw(st.sampled_from(PREFIXES))
    real, steps = work, []
    links, subs = _links(work), _subdirs(work)
    for _ in range(draw(st.integers(0, 7))):
        options = [("d", s) for s in subs[real]] + [("l", n) for n in links[real]]
        if real != work:
            options += [("..", "..")]
        options += [(".", ".")]
        kind, name = draw(st.sampled_from(options))
        steps.append(name)
        if kind == "d":
            real = f"{real}/{name}"
        elif kind == "l":
            real = links[real][name]
        elif kind == "..":
            real = os.path.dirname(real)
    return prefix, steps, real


CHAINS_PROG = r"""
import json, os, sys
work, spec = sys.argv[1], json.loads(sys.argv[2])
os.chdir(work)
dfd = os.open(work, os.O_PATH | os.O_DIRECTORY)
pre = {"work": work, "cwd": "/proc/self/cwd", "thread-self": "/proc/thread-self/cwd",
       "fd": "/proc/self/fd/%d" % dfd, "root": "/proc/self/root" + work}
got = []
for prefix, steps, flags in spec:
    path = "/".join([pre[prefix]] + steps + ["f"])
    fd = os.open(path, flags)
    got.append(os.fstat(fd).st_ino)
    os.close(fd)
print(json.dumps(got))
"""


def _flag_text(flags: int) -> str:
    from sandbox.monitor.audit_syscalls import format_open
    return format_open(flags)


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_recorded_path_is_the_realpath_the_kernel_opened(launcher, tmp_path_factory, py, data):
    base = tmp_path_factory.mktemp("chains")
    work, out = str(base / "work"), str(base / "out")
    _chain_tree(work)
    drawn = data.draw(st.lists(chains(work), min_size=1, max_size=16))
    spec = []
    for i, (prefix, steps, _) in enumerate(drawn):
        flags = BASE_FLAGS
        for j, bit in enumerate(FLAG_BITS):
            if i >> j & 1:
                flags |= bit
        spec.append((prefix, steps, flags))
    r = launcher.spawn([py, "-I", "-c", CHAINS_PROG, work, json.dumps(spec)],
                       policy=_policy("all"), workdir=work, output_dir=out)
    assert r.status == "ok", (r.reason, r.stderr)
    inodes = json.loads(r.stdout)
    recs = sandbox.audit.records(r.run_id, db=launcher.audit_db)
    by_flags: dict[str, list[str]] = {}
    for x in recs:
        if x["syscall"] in ("open", "openat") and x["operation"] == "read":
            by_flags.setdefault(x["flags"], []).append(x["path"])
    for (prefix, steps, flags), ino, (_, _, real) in zip(spec, inodes, drawn):
        opened = os.path.join(real, "f")
        assert os.stat(opened).st_ino == ino, "the host's model of the walk is wrong"
        # every open of the chain (the program's only open with these flags) names it
        assert by_flags.get(_flag_text(flags)) == [opened], (prefix, steps)
    assert all(x["verdict"] == "allowed" for x in recs if x["path"].startswith(work))


def test_the_walk_is_linear_in_the_components(tmp_path, monkeypatch):
    """A hostile spelling (`../a/` over and over under a tree 400 deep, failing at its end so
    the kernel's walk cannot answer it) costs one lookup per component: each `..` took
    the directory's parent from its descriptor, never walked it again from the root
    (63 ms of the monitor's CPU per call when it did). Counted, not timed."""
    from sandbox.monitor import record_path
    from sandbox.monitor.root_walk import Root
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    for _ in range(400):      # (pytest's rmtree of tmp_path recurses: not 1,000)
        os.mkdir("a", dir_fd=fd)
        fd, old = os.open("a", os.O_PATH | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(fd)
    root = Root(os.open(tmp_path, os.O_PATH | os.O_DIRECTORY))
    opened = []
    real_openat2, real_open = record_path.openat2, os.open

    def openat2(dirfd, path, *args):
        opened.append(path.count("/") + 1)
        return real_openat2(dirfd, path, *args)

    def counted_open(path, *args, **kw):
        opened.append(1)
        return real_open(path, *args, **kw)

    monkeypatch.setattr(record_path, "openat2", openat2)
    monkeypatch.setattr(record_path.os, "open", counted_open)
    spelling = "/a" * 400 + "/../a" * 150 + "/missing/x"
    got = record_path.canonical(root, spelling, True)
    monkeypatch.undo()
    root.close()
    assert got == "/a" * 400 + "/missing/x"
    deepest = str(tmp_path) + "/a" * 400
    while deepest != str(tmp_path):        # not left to pytest's recursive rmtree
        os.rmdir(deepest)
        deepest = os.path.dirname(deepest)
    comps = spelling.count("/")
    assert sum(opened) <= 2 * comps + 2000, sum(opened)   # components looked up, at most
