"""`[filesystem] workdir = "copy-on-write"`: a writable work directory, the host's untouched.

Judged from the host: the work directory's bytes, modes and mtimes before and
after, the output's `workdir.changes` and `workdir.deleted.json`, and the
launcher's own files. Works as root and as an unprivileged user.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox.errors import InputError, PolicyError
from sandbox.launcher.workdir_cow import CHANGES, DELETED
from sandbox.policy import load_policy, parse_policy

pytestmark = pytest.mark.isolation

COW = parse_policy('extends = ["default"]\n[filesystem]\nworkdir = "copy-on-write"\n',
                   file="cow.toml")


def snapshot(root) -> dict[str, tuple]:
    """Every entry under `root`: type, mode, size, mtime_ns, bytes (or link text)."""
    out: dict[str, tuple] = {}
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files, "."]:
            p = os.path.normpath(os.path.join(top, name))
            st = os.lstat(p)
            data = os.readlink(p) if os.path.islink(p) else \
                (open(p, "rb").read() if os.path.isfile(p) else None)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return out


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    (w / "sub").mkdir(parents=True)
    (w / "a.txt").write_text("original\n")
    (w / "sub" / "gone.txt").write_text("to be deleted\n")
    (w / "dir").mkdir()
    (w / "dir" / "old").write_text("old\n")
    (tmp_path / "secret").write_text("host secret\n")
    for p in (tmp_path, w, w / "sub", w / "dir"):
        os.chmod(p, 0o755)
    for p in (w / "a.txt", w / "sub" / "gone.txt", w / "dir" / "old", tmp_path / "secret"):
        os.chmod(p, 0o644)
    return w


def run(launcher, work, out, script: str, policy=COW):
    return launcher.spawn(["sh", "-c", script], policy=policy, workdir=str(work),
                          output_dir=str(out))


def test_writes_land_in_the_output_and_the_host_directory_is_untouched(launcher, work, tmp_path):
    before = snapshot(work)
    out = tmp_path / "out"
    r = run(launcher, work, out, "echo new > c.txt && echo more >> a.txt && rm sub/gone.txt && "
                                 "rm -r dir && mkdir dir && echo fresh > dir/new && "
                                 "touch -d 2001-01-01 sub && chmod 700 sub && cat a.txt c.txt")
    assert (r.status, r.stdout) == ("ok", "original\nmore\nnew\n"), (r.reason, r.stderr)
    assert snapshot(work) == before
    changes = out / CHANGES
    assert r.workdir_changes == str(changes)
    assert (changes / "c.txt").read_text() == "new\n"
    assert (changes / "a.txt").read_text() == "original\nmore\n"
    assert (changes / "dir" / "new").read_text() == "fresh\n"
    assert json.loads((out / DELETED).read_text()) == ["dir/", "sub/gone.txt"]
    assert not any(os.path.exists(p) for p in (changes / "sub" / "gone.txt",))


def test_git_init_and_an_in_tree_build_work(launcher, work, tmp_path, py):
    before = snapshot(work)
    out = tmp_path / "out"
    script = ("git init -q repo && cd repo && git config user.email a@b && git config user.name a"
              " && echo x > f && git add f && git commit -qm first && git log --format=%s")
    r = run(launcher, work, out, script)
    if r.exit_code == 127:
        pytest.fail("needs git (scripts/install.sh installs it)")
    assert (r.status, r.stdout) == ("ok", "first\n"), (r.reason, r.stderr)
    assert snapshot(work) == before
    assert (out / CHANGES / "repo" / ".git" / "HEAD").is_file()


def test_nothing_changed_leaves_no_changes_directory(launcher, work, tmp_path):
    out = tmp_path / "out"
    r = run(launcher, work, out, "cat a.txt >/dev/null")
    assert r.status == "ok" and r.workdir_changes is None
    assert not (out / CHANGES).exists() and not (out / DELETED).exists()


def test_an_output_inside_the_work_directory_is_the_hosts(launcher, work, tmp_path):
    """The output is bound over the overlay: what goes there is the real output,
    not a copy; and the work directory itself stays untouched but for it."""
    out = work / "out"
    out.mkdir()
    os.chmod(out, 0o755)
    r = run(launcher, work, out, 'echo result > "$SANDBOX_OUTPUT/r" && echo w > w.txt')
    assert r.status == "ok", (r.reason, r.stderr)
    assert (out / "r").read_text() == "result\n"
    assert not (work / "w.txt").exists()
    assert (out / CHANGES / "w.txt").read_text() == "w\n"


def test_the_run_cannot_plant_or_read_the_changes_directory(launcher, work, tmp_path):
    out = tmp_path / "out"
    host = tmp_path / "secret"
    before = host.read_bytes(), host.stat().st_mtime_ns
    r = run(launcher, work, out, 'echo x > mine.txt; o="$SANDBOX_OUTPUT"; '
                                 'echo planted > "$o/workdir.changes/evil" && echo planted-ok; '
                                 'echo pre > "$o/workdir.deleted.json" && echo listed-ok; '
                                 f'rm -f "$o/workdir.deleted.json"; ln -s {host} "$o/workdir.deleted.json" '
                                 '&& echo link-ok; rm a.txt; true')
    assert r.status == "ok", (r.reason, r.stderr)
    assert not {"planted-ok", "listed-ok", "link-ok"} & set(r.stdout.split()), r.stdout
    assert sorted(os.listdir(out / CHANGES)) == ["mine.txt"]
    assert json.loads((out / DELETED).read_text()) == ["a.txt"]
    assert (host.read_bytes(), host.stat().st_mtime_ns) == before


def test_links_and_special_files_made_in_the_overlay_are_never_followed(launcher, work, tmp_path):
    """The export runs in the launcher (root in CI): a symlink to a host file stays a
    link, a fifo is dropped (copying it would hang), and the host file is unchanged."""
    secret = tmp_path / "secret"
    before = secret.read_bytes(), secret.stat().st_mtime_ns, secret.stat().st_mode
    out = tmp_path / "out"
    r = run(launcher, work, out, f"ln -s {secret} link && mkfifo pipe && ln -s / root && "
                                 "mkdir d && ln -s ../../ d/up && echo ok")
    assert (r.status, r.stdout) == ("ok", "ok\n"), (r.reason, r.stderr)
    changes = out / CHANGES
    assert os.readlink(changes / "link") == str(secret)
    assert not os.path.lexists(changes / "pipe")
    assert (secret.read_bytes(), secret.stat().st_mtime_ns, secret.stat().st_mode) == before


SMALL = parse_policy('extends = ["default"]\n[filesystem]\nworkdir = "copy-on-write"\n'
                     'output_size = "8MiB"\noutput_inodes = 400\n', file="small.toml")
FILL = r"""
import errno, os, sys
what, cap = sys.argv[1], int(sys.argv[2])
done, err = 0, 0
try:
    while done < cap:
        if what == "bytes":
            with open(f"big{done >> 20}", "wb") as f:
                f.write(b"x" * (1 << 20))
            done += 1 << 20
        else:
            open(f"f{done}", "w").close()
            done += 1
except OSError as exc:
    err = exc.errno
print(done, errno.errorcode.get(err, err))
sys.exit(1 if err else 0)
"""


def tree_size(root) -> tuple[int, int]:
    """(bytes of regular files, entries) under `root`, as the host sees them."""
    size = n = 0
    for top, dirs, files in os.walk(root):
        n += len(dirs) + len(files)
        size += sum(os.lstat(os.path.join(top, f)).st_blocks * 512 for f in files)
    return size, n


def test_filling_the_layer_hits_its_bound_not_the_hosts_disk(launcher, work, tmp_path, py):
    """The write layer is a tmpfs of output_size: the program gets ENOSPC there, and
    neither the export nor anything else of the run on the host's disk exceeds it."""
    out = tmp_path / "out"
    r = launcher.spawn([py, "-c", FILL, "bytes", str(64 << 20)], policy=SMALL,
                       workdir=str(work), output_dir=str(out))
    assert r.exit_code in (0, 1), (r.reason, r.stderr)
    done, err = r.stdout.split()
    assert (err, int(done) <= 8 << 20) == ("ENOSPC", True), r.stdout
    assert tree_size(out)[0] <= 8 << 20
    assert any("copy-on-write" in h and "output_size" in h for h in r.hints), r.hints


def test_a_huge_number_of_files_hits_the_inode_bound(launcher, work, tmp_path, py):
    out = tmp_path / "out"
    r = launcher.spawn([py, "-c", FILL, "files", "20000"], policy=SMALL,
                       workdir=str(work), output_dir=str(out))
    assert r.exit_code in (0, 1), (r.reason, r.stderr)
    done, err = r.stdout.split()
    assert (err, int(done) <= 400) == ("ENOSPC", True), r.stdout
    assert tree_size(out / CHANGES)[1] <= 400


def test_setid_bits_links_and_devices_never_survive_the_export(launcher, work, tmp_path, py):
    """The export runs as the caller (root in CI): what the run leaves in the layer is
    handed back inert, like ${OUTPUT}: no set-id or sticky bit, owner-only modes, links
    as text, no fifo or device; the host file a link names is untouched."""
    secret = tmp_path / "secret"
    before = secret.read_bytes(), secret.stat().st_mtime_ns, secret.stat().st_mode
    out = tmp_path / "out"
    r = run(launcher, work, out, f"cp /bin/true suid && chmod 6755 suid && mkdir sticky && "
                                 f"chmod 1777 sticky && chmod 4755 a.txt && ln -s {secret} link "
                                 "&& mkfifo pipe; mknod dev c 1 3 2>/dev/null; "
                                 "mknod wh c 0 0 2>/dev/null; echo done")
    assert (r.status, r.stdout) == ("ok", "done\n"), (r.reason, r.stderr)
    changes = out / CHANGES
    for name in ("suid", "sticky", "a.txt"):
        mode = os.lstat(changes / name).st_mode
        assert mode & 0o7077 == 0, (name, oct(mode))
    assert os.readlink(changes / "link") == str(secret)
    assert not any(os.path.lexists(changes / n) for n in ("pipe", "dev", "wh"))
    assert (secret.read_bytes(), secret.stat().st_mtime_ns, secret.stat().st_mode) == before
    for top, dirs, files in os.walk(out):
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            assert not st.st_mode & (0o7000), (name, oct(st.st_mode))


def test_strict_keeps_the_work_directory_read_only(launcher, work, tmp_path):
    assert load_policy("strict").filesystem.workdir == "direct"
    # on in default: the write layer is a tmpfs bounded like the output
    assert load_policy("default").filesystem.workdir == "copy-on-write"
    before = snapshot(work)
    r = run(launcher, work, tmp_path / "out", "echo x > c.txt", policy="strict")
    assert r.status != "ok" and "Read-only file system" in r.stderr
    assert snapshot(work) == before


def test_an_explicit_write_grant_writes_the_host_directory(launcher, work, tmp_path):
    """`--write .` on top of default: the explicit grant wins (documented)."""
    pol = parse_policy(f'extends = ["default"]\n[filesystem]\nwrite = ["{work}"]\n')
    r = run(launcher, work, tmp_path / "out", "echo direct > d.txt", policy=pol)
    assert r.status == "ok" and (work / "d.txt").read_text() == "direct\n"
    assert r.workdir_changes is None


def test_under_a_ceiling_the_overlay_is_no_host_write(launcher, work, tmp_path):
    """A token's or hook's ceiling of `default` admits default's copy-on-write work
    directory (its writes go to the run's layer); under a ceiling with workdir = direct
    the run gets direct (met with the ceiling, like scratch_exec): read-only."""
    from sandbox.nested import Lineage
    from sandbox.policy.confine import Ceiling
    before = snapshot(work)
    r = launcher.spawn(["sh", "-c", "echo x > c.txt"], policy="default", workdir=str(work),
                       output_dir=str(tmp_path / "out"),
                       lineage=Lineage(ceiling=Ceiling(load_policy("default"), what="ceiling")))
    assert r.status == "ok" and (tmp_path / "out" / CHANGES / "c.txt").is_file(), r.reason
    from dataclasses import replace
    d = load_policy("default")
    direct = d.replace(filesystem=replace(d.filesystem, workdir="direct"))
    r = launcher.spawn(["sh", "-c", "echo x > c.txt"], policy="default", workdir=str(work),
                       output_dir=str(tmp_path / "out2"),
                       lineage=Lineage(ceiling=Ceiling(direct, what="ceiling")))
    assert r.status != "ok" and "Read-only file system" in r.stderr, (r.status, r.stderr)
    assert not (tmp_path / "out2" / CHANGES).exists()
    assert snapshot(work) == before


def test_a_file_asking_for_both_is_refused():
    with pytest.raises(PolicyError) as exc:
        parse_policy('[filesystem]\nwrite = ["${WORKDIR}"]\nworkdir = "copy-on-write"\n',
                     file="both.toml")
    assert exc.value.key == "filesystem.workdir" and exc.value.line == 3, str(exc.value)
    with pytest.raises(PolicyError, match="must be one of direct, copy-on-write"):
        parse_policy('[filesystem]\nworkdir = "cow"\n')


def test_a_leftover_changes_directory_is_refused_not_merged(launcher, work, tmp_path):
    out = tmp_path / "out"
    (out / CHANGES).mkdir(parents=True)
    with pytest.raises(InputError, match="already holds workdir.changes|is not empty"):
        run(launcher, work, out, "true")


def test_the_cli_flag(work, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--policy", "strict",
                        "--workdir-mode", "copy-on-write", "--workdir", str(work), "--output",
                        str(out), "--", "sh", "-c", "echo via-flag > f.txt && cat f.txt"],
                       capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout) == (0, "via-flag\n"), p.stderr
    assert not (work / "f.txt").exists() and (out / CHANGES / "f.txt").is_file()
