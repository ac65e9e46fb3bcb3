"""Attack: a sandbox swaps a directory the trusted side acts on by name for a symlink.

Issue 14 ("one path resolver, the kernel's"): whatever the launcher, the
monitor or PID 1 does on the host for a run is done on a descriptor the kernel
resolved (openat2 with RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT or O_NOFOLLOW per
component), never on a name looked up again later. A sandbox granted write on a
directory (this run, a concurrent one, or an earlier one that shared it) can
rename any component beneath it and plant a symlink in its place while the
trusted side is not looking.

Judged from the host: what lands in a directory no rule names ("victim"),
and what the launcher returns.
"""
from __future__ import annotations

import os

import pytest

from sandbox.policy import parse_policy

pytestmark = pytest.mark.isolation

WRITE_WORK = parse_policy('extends = ["default"]\n[filesystem]\nwrite = ["${WORKDIR}"]\n',
                          file="write-work.toml")

# The program (this run) writes its output (a tmpfs in the view), then renames the
# output's parent away and leaves a symlink to the victim in its place.
SWAP_OUTPUT_PARENT = r"""
set -eu
echo pwned > "$SANDBOX_OUTPUT/evil"
mkdir "$SANDBOX_OUTPUT/d" && echo pwned > "$SANDBOX_OUTPUT/d/evil"
mv "$W/a" "$W/a.moved"
ln -s "$VICTIM" "$W/a"
echo swapped
"""


@pytest.fixture
def shared(tmp_path):
    """A work directory the run may write, its output two levels down in it, and a
    victim directory of the caller's holding an (empty) directory of the output's name."""
    work, victim = tmp_path / "work", tmp_path / "victim"
    (work / "a" / "out").mkdir(parents=True)
    (victim / "out").mkdir(parents=True)
    return work, victim


def test_the_output_is_not_copied_through_a_parent_swapped_during_the_run(launcher, shared):
    work, victim = shared
    r = launcher.spawn(["sh", "-c", SWAP_OUTPUT_PARENT], policy=WRITE_WORK,
                       workdir=str(work), output_dir=str(work / "a" / "out"),
                       env={"W": str(work), "VICTIM": str(victim)})
    assert "swapped" in r.stdout, (r.status, r.reason, r.stderr)
    assert os.listdir(victim / "out") == [], "the monitor copied the output through the link"
    assert os.listdir(work / "a.moved" / "out") == []   # never the swapped-in place either
    assert r.output is not None and r.output.get("error"), r.output   # said, not silent


def cow_and_write(shared) -> object:
    return parse_policy('extends = ["default"]\n[filesystem]\nworkdir = "copy-on-write"\n'
                        f'write = ["{shared}"]\n', file="cow-write.toml")


def test_the_copy_on_write_export_is_not_done_through_a_swapped_parent(launcher, tmp_path):
    """The launcher's own steps after the run (reading the deletions list, removing
    what stayed empty) act on the output it resolved, never through a link the run
    planted above it: the victim's files of the same names stay."""
    work, shared, victim = tmp_path / "work", tmp_path / "shared", tmp_path / "victim"
    (work / "x").mkdir(parents=True)
    (work / "x" / "f").write_text("lower\n")
    (shared / "a" / "out").mkdir(parents=True)
    (victim / "out" / "workdir.changes").mkdir(parents=True)
    (victim / "out" / "workdir.deleted.json").write_text("")
    (victim / "out" / "keep.json").write_text("[]\n")
    script = ('set -eu; rm x/f; echo new > y; mv "$S/a" "$S/a.moved"; '
              'ln -s "$VICTIM" "$S/a"; echo swapped')
    r = launcher.spawn(["sh", "-c", script], workdir=str(work),
                       policy=cow_and_write(shared),
                       output_dir=str(shared / "a" / "out"),
                       env={"S": str(shared), "VICTIM": str(victim)})
    assert "swapped" in r.stdout, (r.status, r.reason, r.stderr)
    assert sorted(os.listdir(victim / "out")) == ["keep.json", "workdir.changes",
                                                  "workdir.deleted.json"]
    assert (victim / "out" / "workdir.deleted.json").read_text() == ""
    assert r.workdir_changes is None          # nothing exported, through the link or not
    assert (work / "x" / "f").read_text() == "lower\n"


def _try_write(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("pwned\n")
        return "written"
    except OSError as exc:
        import errno
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_landlock_alone_never_grants_what_a_swapped_rule_path_points_to(tmp_path, link):
    """best_effort without namespaces: Landlock is the only guard of the host's files.
    A write rule's directory is swapped for a link after the monitor resolved the plan
    (mount_plan.prepare, before the fork) and before the layer opens it: the rule must not
    land on the link's target (before: Landlock opened the name and followed it)."""
    from layer_harness import run_layers
    from sandbox.isolation import landlock, mount_plan
    from sandbox.policy.model import Policy
    from sandbox.policy.plan import FsPlan, FsRule
    if landlock.abi_version() < 1:
        pytest.fail("this kernel has no Landlock: the machine this suite targets has ABI 7")
    shared, victim = tmp_path / "shared", tmp_path / "victim"
    (shared / "data").mkdir(parents=True)
    victim.mkdir()
    data = str(shared / "data")
    plan = FsPlan(rules=(FsRule(data, write=True),))
    table = mount_plan.prepare(plan)           # the monitor's view of the host, before the fork
    os.rename(data, data + ".orig")        # ... then a concurrent writer swaps it
    os.symlink(str(victim) if link == "absolute" else "../victim", data)
    r = run_layers(Policy(best_effort=True), lambda: _try_write(str(victim / "x")),
                   base=str(tmp_path), until="landlock", use_namespaces=False,
                   fs_plan=plan, mount_table=table)
    assert not (victim / "x").exists(), r
    assert r["ok"] and r["value"] == "EACCES", r
    assert any(a.startswith("landlock") for a in r["active"]), r     # the layer still holds
    assert any(data in k for k in r["skipped"]), r["skipped"]        # and says what it dropped


def test_a_symlink_the_view_recreates_is_never_made_through_a_swapped_parent(
        tmp_path, monkeypatch):
    """The view recreates the links on a rule's path (`/lib -> usr/lib` style). The
    link's location lies in a writable host tree bound into the view; its parent is
    swapped for a link to the victim after the table was computed. Before: the mount
    layer tested and created the link by name (before the pivot, an absolute link
    resolves on the host) and left a symlink in the victim directory."""
    from layer_harness import run_layers
    from sandbox.isolation import mount_plan
    from sandbox.policy.model import Policy
    from sandbox.policy.plan import FsPlan, FsRule
    shared, victim = tmp_path / "shared", tmp_path / "victim"
    (shared / "a").mkdir(parents=True)
    (shared / "b").mkdir()
    (shared / "b" / "f").write_text("granted\n")
    (shared / "a" / "lnk").symlink_to("../b")
    victim.mkdir()
    plan = FsPlan(rules=(FsRule(str(shared), write=True), FsRule(str(shared / "a" / "lnk" / "f"))))
    table = mount_plan.prepare(plan)
    assert any(s.kind == "link" for s in table.steps), table.steps
    os.rename(shared / "a", shared / "a.orig")       # a concurrent writer of `shared`
    os.symlink(str(victim), shared / "a")
    r = run_layers(Policy(), lambda: None, base=str(tmp_path), until="mounts",
                   fs_plan=plan, mount_table=table)
    assert os.listdir(victim) == [], r
    assert not r["ok"] and "ELOOP" in r["error"], r     # fails closed: the plan's path is gone


def test_a_glob_grant_does_not_follow_a_link_an_earlier_run_planted(launcher, tmp_path):
    """An earlier run granted write on the work directory plants `notes.txt ->` a host
    file no rule grants; a later run's policy reads `${WORKDIR}/*.txt`. A glob match is
    a name the caller never wrote: the plan binds a matched link's target only where
    the policy grants that target itself. Before: the later run read the host file."""
    work, secret = tmp_path / "work", tmp_path / "secret"
    work.mkdir()
    secret.write_text("host secret\n")
    r1 = launcher.spawn(["sh", "-c", f'ln -s "{secret}" notes.txt; ln -s /etc/hostname '
                        'host.txt; echo plain > plain.txt; echo planted'],
                        policy=WRITE_WORK, workdir=str(work))
    assert "planted" in r1.stdout, (r1.status, r1.reason, r1.stderr)
    glob = parse_policy('extends = ["default"]\n[filesystem]\nread = ["${WORKDIR}/*.txt"]\n',
                        file="glob.toml")
    r2 = launcher.spawn(["sh", "-c", "cat notes.txt; cat plain.txt; cat host.txt"],
                        policy=glob, workdir=str(work))
    assert "host secret" not in r2.stdout, r2.stdout
    assert "plain" in r2.stdout                     # a plain match is granted as before
    with open("/etc/hostname") as f:                # a link to what the policy grants anyway
        assert f.read() in r2.stdout, (r2.stdout, r2.stderr)


def test_sanitize_in_place_does_not_work_through_a_swapped_parent(tmp_path):
    """best_effort without namespaces: the program wrote the host output itself, and
    the monitor makes it inert in place (modes, fifos removed). A parent swapped for a
    link meanwhile must not turn that onto the victim's files (before: their modes
    were changed and their fifos deleted)."""
    from sandbox.monitor import copy_out
    out_parent, victim = tmp_path / "shared" / "a", tmp_path / "victim"
    (out_parent / "out").mkdir(parents=True)
    (victim / "out").mkdir(parents=True)
    (victim / "out" / "f").write_text("victim\n")
    os.chmod(victim / "out" / "f", 0o644)
    os.mkfifo(victim / "out" / "fifo")
    dest = str(out_parent / "out")
    os.rename(out_parent, str(out_parent) + ".moved")
    os.symlink(victim, out_parent)
    rep = copy_out.sanitize(dest)
    assert rep.error and "symlink" in rep.error, rep
    assert sorted(os.listdir(victim / "out")) == ["f", "fifo"]
    assert os.stat(victim / "out" / "f").st_mode & 0o777 == 0o644


@pytest.mark.parametrize("flag", ["--result", "--audit-log"])
def test_cli_result_and_audit_log_are_written_to_the_file_checked_before_the_run(
        capfd, tmp_path, flag):
    """`sandbox exec --write . --result ./r/run.json`: the file is checked (no link, the
    caller's, 0600) before the run, and the run, granted write on the work directory,
    replaces it with a symlink to a file of the caller's, or swaps its parent for a
    link, before the CLI writes it. The write must go to what was checked (before:
    the audit log, opened by name with no O_NOFOLLOW, truncated the victim file; the
    result followed the swapped parent)."""
    from sandbox.cli.main import main
    work, victim = tmp_path / "work", tmp_path / "victim"
    (work / "r").mkdir(parents=True)
    victim.mkdir()
    (victim / "precious").write_text("precious\n")
    (victim / "f.json").write_text("precious\n")
    target = work / "r" / "f.json"
    script = (f'set -e; rm -f r/f.json; ln -s "{victim}/precious" r/f.json; '
              f'mv r r.moved; ln -s "{victim}" r; echo swapped')
    code = main(["exec", "--write", str(work), "--workdir", str(work), flag, str(target),
                 "--output", str(tmp_path / "o"), "--", "sh", "-c", script])
    out = capfd.readouterr()
    assert "swapped" in out.out, (code, out.err)
    assert (victim / "precious").read_text() == "precious\n"
    assert (victim / "f.json").read_text() == "precious\n"
    assert sorted(os.listdir(victim)) == ["f.json", "precious"]


def test_a_rule_path_swapped_between_the_plan_and_the_mount_table_fails_closed(tmp_path):
    """The launcher plans (`build_plan`: the engine decided on `data`), then the monitor
    or PID 1 computes the mount table from the plan's paths. A concurrent writer of the
    work directory swaps `data` for a link to a host directory in between. Before: the
    table resolved the link afresh and the view bound its target (the run read it)."""
    from layer_harness import run_layers
    from sandbox.policy import build_plan, default_variables, resolve
    from sandbox.policy.model import Policy
    work, victim = tmp_path / "work", tmp_path / "victim"
    (work / "data").mkdir(parents=True)
    (work / "data" / "granted").write_text("granted\n")
    victim.mkdir()
    (victim / "key").write_text("host secret\n")
    policy = parse_policy(f'[filesystem]\nread = ["{work}/data"]\n', file="data.toml")
    plan = build_plan(resolve(policy, default_variables(str(work), str(tmp_path / "o"))))
    assert any(r.path == str(work / "data") for r in plan.rules), plan
    os.rename(work / "data", work / "data.orig")
    os.symlink(victim, work / "data")

    def read() -> list[str]:
        out = []
        for name in ("key", "granted"):
            try:
                out.append(open(os.path.join(str(work / "data"), name)).read())
            except OSError as exc:
                out.append(type(exc).__name__)
        return out
    r = run_layers(Policy(), read, base=str(tmp_path / "run"), until="mounts", fs_plan=plan)
    assert "host secret\n" not in r.get("value", []), r
    assert not r["ok"] and "ELOOP" in r["error"], r


def test_in_the_view_a_landlock_rule_swapped_after_the_mounts_fails_closed(tmp_path, monkeypatch):
    """With the view: between the mount layer and Landlock a concurrent writer of a
    bound host tree swaps a rule's parent for a link (`sub -> .`). Landlock opens the
    rule's real path beneath the view's root without following links: the layer fails
    (before: it opened the name and put the rule on whatever the link reached)."""
    from layer_harness import run_layers
    from sandbox.isolation import landlock, mounts
    from sandbox.policy.model import Policy
    from sandbox.policy.plan import FsPlan, FsRule
    if landlock.abi_version() < 1:
        pytest.fail("this kernel has no Landlock: the machine this suite targets has ABI 7")
    shared = tmp_path / "shared"
    (shared / "sub" / "ro").mkdir(parents=True)
    (shared / "ro").mkdir()
    plan = FsPlan(rules=(FsRule(str(shared), write=True), FsRule(str(shared / "sub" / "ro"))))
    real_apply = mounts.apply

    def apply_then_swap(ctx) -> None:
        real_apply(ctx)
        os.rename(shared / "sub", shared / "sub.orig")    # on the host, seen in the view
        os.symlink(".", shared / "sub")
    from sandbox.isolation import contain      # the forked sandboxee inherits the patch
    monkeypatch.setattr(contain, "SEQUENCE", tuple(
        (n, apply_then_swap if n == "mounts" else f) for n, f in contain.SEQUENCE))
    r = run_layers(Policy(), lambda: None, base=str(tmp_path / "run"), until="landlock",
                   fs_plan=plan)
    assert not r["ok"] and "landlock" in r["error"] and "symlink" in r["error"], r
