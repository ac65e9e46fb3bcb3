"""Issue 10, findings 3 and 9: what a run hands back is inert and private.

Judged from the host side: the files left in the output directory after the
run, their owner and modes, and what another local user could do with them.
"""
from __future__ import annotations

import os
import stat
import sys

import pytest

from sandbox.launcher.launcher import Launcher

pytestmark = pytest.mark.isolation

PLANT = r"""
set -u
cp /bin/sh "$SANDBOX_OUTPUT/rootsh" && chmod 4755 "$SANDBOX_OUTPUT/rootsh"
cp /bin/sh "$SANDBOX_OUTPUT/groupsh" && chmod 2755 "$SANDBOX_OUTPUT/groupsh"
mkdir -p "$SANDBOX_OUTPUT/d/e" && chmod 3777 "$SANDBOX_OUTPUT/d"
echo data > "$SANDBOX_OUTPUT/d/e/f" && chmod 0666 "$SANDBOX_OUTPUT/d/e/f"
ln -s /etc/shadow "$SANDBOX_OUTPUT/link"
mkfifo "$SANDBOX_OUTPUT/fifo" || true
mknod "$SANDBOX_OUTPUT/null" c 1 3 2>/dev/null || true
"$PY" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' \
    "$SANDBOX_OUTPUT/sock" || true
echo planted
"""


def walk(top):
    """(path, lstat) of everything under top, top included."""
    out = [(top, os.lstat(top))]
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(base, name)
            out.append((p, os.lstat(p)))
    return out


def assert_inert(top):
    for path, st in walk(top):
        kind = stat.S_IFMT(st.st_mode)
        assert kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK), (path, oct(st.st_mode))
        assert st.st_uid == os.geteuid(), (path, st.st_uid)
        if kind != stat.S_IFLNK:
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), \
                (path, oct(st.st_mode))
            assert not st.st_mode & 0o077, (path, oct(st.st_mode))


def test_a_setuid_shell_device_fifo_or_socket_left_in_the_output_is_not_handed_back(tmp_path):
    out = tmp_path / "out"
    r = Launcher(capture_output=True).spawn(
        ["sh", "-c", PLANT], output_dir=str(out), env={"PY": sys.executable})
    assert r.status == "ok", (r.status, r.reason, r.stderr)
    assert "planted" in r.stdout
    assert_inert(str(out))
    names = {p.name for p in out.iterdir()}
    assert {"rootsh", "groupsh", "d", "link"} <= names
    assert not names & {"fifo", "null", "sock"}
    assert (out / "d" / "e" / "f").read_text() == "data\n"
    assert os.readlink(out / "link") == "/etc/shadow"
    assert r.output is not None and r.output["dropped"] >= 2, r.output   # fifo and socket


def test_the_default_state_directory_and_the_run_output_are_private(tmp_path, monkeypatch):
    old = os.umask(0)   # creation must not depend on the caller's umask
    try:
        home = tmp_path / "state"
        monkeypatch.setenv("SANDBOX_HOME", str(home))
        r = Launcher(capture_output=True).spawn(
            ["sh", "-c", 'echo x > "$SANDBOX_OUTPUT/f"; mkdir "$SANDBOX_OUTPUT/sub"'])
    finally:
        os.umask(old)
    assert r.status == "ok", (r.status, r.reason, r.stderr)
    out = r.output_dir
    assert out.startswith(str(home) + "/runs/")
    p = out
    while True:
        st = os.lstat(p)
        assert stat.S_IMODE(st.st_mode) == 0o700, (p, oct(st.st_mode))
        assert st.st_uid == os.geteuid()
        if p == str(home):
            break
        p = os.path.dirname(p)
    assert stat.S_IMODE(os.lstat(os.path.join(out, "f")).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(os.path.join(out, "sub")).st_mode) == 0o700


# -- the --output path (finding 10.3): refused before anything runs ----------------

RAN = ["sh", "-c", 'echo ran > "$SANDBOX_OUTPUT/sbx-ran-$SANDBOX_RUN_ID"; echo ran']


def refused(out, **kw):
    """Spawn RAN with output_dir=out; the refusal and that nothing ran."""
    from sandbox.errors import OutputPathError
    la = Launcher(capture_output=True)
    seen = []
    la.after_spawn(lambda res, info: seen.append(res.run_id))
    with pytest.raises(OutputPathError) as exc:
        la.spawn(RAN, output_dir=str(out), **kw)
    assert seen and not any(
        os.path.exists(os.path.join(str(out), f"sbx-ran-{rid}")) for rid in seen)
    return str(exc.value)


@pytest.mark.parametrize("path", ["/", "/etc", "/usr", "/var", "/bin", "/sbin", "/lib",
                                  "/root", "/run", "/boot", "/tmp", "/proc/self",
                                  "/sys/kernel", "/dev/shm", "/etc/"])
def test_system_directories_are_refused_as_output(path):
    msg = refused(path)
    assert "system directory" in msg or "kernel filesystem" in msg, msg


def test_the_home_directory_is_refused_as_output(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "state"))   # run history goes there
    assert "home directory" in refused(home)
    assert list(home.iterdir()) == []


def test_a_non_empty_directory_or_a_file_is_refused_as_output(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("k")
    assert "not empty" in refused(full)
    (tmp_path / "file").write_text("f")
    assert "not a directory" in refused(tmp_path / "file")
    assert (full / "keep").read_text() == "k" and len(list(full.iterdir())) == 1


def test_a_symlink_at_the_output_path_is_never_followed(tmp_path):
    """The attack: a link planted at a predictable --output path in a sticky,
    world-writable directory redirects the caller's writes into its own dir."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (sticky / "out").symlink_to(victim)
    if os.geteuid() == 0:
        os.lchown(sticky / "out", 65534, 65534)   # planted by nobody
    assert "symlink" in refused(sticky / "out")
    assert list(victim.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="planting as another user needs root")
def test_a_symlink_of_another_user_on_the_way_is_not_followed(tmp_path):
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (sticky / "dir").symlink_to(victim)
    os.lchown(sticky / "dir", 65534, 65534)
    assert "owned by uid 65534" in refused(sticky / "dir" / "out")
    assert list(victim.iterdir()) == []


def test_a_parent_writable_by_others_without_the_sticky_bit_is_refused(tmp_path):
    ww = tmp_path / "ww"
    ww.mkdir()
    ww.chmod(0o777)
    assert "writable by other users" in refused(ww / "out")
    assert list(ww.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a directory of another user needs root")
def test_a_parent_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    assert "owned by uid 65534" in refused(theirs / "out")


def test_an_existing_empty_output_directory_is_made_private(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    r = Launcher(capture_output=True).spawn(RAN, output_dir=str(out))
    assert r.status == "ok" and r.stdout == "ran\n", (r.reason, r.stderr)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_cli_exec_refuses_an_unsafe_output_with_125_and_one_line(capsys, tmp_path):
    from sandbox.cli.main import main
    token = os.urandom(6).hex()
    code = main(["exec", "--output", "/etc", "--", "sh", "-c",
                 f'echo pwned > "$SANDBOX_OUTPUT/sbx-{token}"'])
    err = capsys.readouterr().err
    assert code == 125, err
    assert err.count("\n") == 1 and "/etc" in err and "Traceback" not in err, err
    assert not os.path.exists(f"/etc/sbx-{token}")


def test_cli_result_and_audit_log_are_not_written_through_a_planted_link(capsys, tmp_path):
    from sandbox.cli.main import main
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (sticky / "run.json").symlink_to(victim)
    (sticky / "trail.jsonl").symlink_to(victim)
    for flag, name in (("--result", "run.json"), ("--audit-log", "trail.jsonl")):
        code = main(["exec", flag, str(sticky / name), "--output", str(tmp_path / f"o{flag}"),
                     "--", "true"])
        err = capsys.readouterr().err
        assert code == 125 and "symlink" in err, err
        assert victim.read_text() == "precious"
    code = main(["exec", "--result", str(tmp_path / "r.json"), "--", "true"])
    assert code == 0
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o600
    assert '"status": "ok"' in (tmp_path / "r.json").read_text()


# -- the output quota (finding 10.7): writes really stop, the host disk is bounded --

FILL = r"""
import os, sys
out = os.environ["SANDBOX_OUTPUT"]
res = {}
try:
    with open(out + "/big", "wb") as f:
        for _ in range(8):
            f.write(b"x" * (1 << 20))
            f.flush()
except OSError as e:
    res["bytes_errno"] = e.errno
os.unlink(out + "/big")
n = 0
try:
    while n < 5000:
        open(f"{out}/f{n}", "w").close()
        n += 1
except OSError as e:
    res["files_errno"] = e.errno
res["files"] = n
for i in range(min(n, 100)):
    os.unlink(f"{out}/f{i}")
with open(out + "/half", "wb") as f:
    f.write(os.urandom(600 << 10))
for i in range(60):        # hard links: one inode's data, many names
    try:
        os.link(out + "/half", f"{out}/link{i}")
    except OSError:
        break
print(res)
"""


def small_output_policy():
    from dataclasses import replace
    from sandbox.policy import load_policy
    pol = load_policy("strict")
    return pol.replace(name="small-output", filesystem=replace(
        pol.filesystem, output_size=2 << 20, output_inodes=200))


def disk_used(top):
    seen, total = set(), 0
    for path, st in walk(top):
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def test_writes_beyond_output_size_and_output_inodes_fail_with_enospc(tmp_path, py):
    import errno
    out = tmp_path / "out"
    r = Launcher(capture_output=True).spawn([py, "-I", "-c", FILL], policy=small_output_policy(),
                                            output_dir=str(out))
    assert r.status == "ok", (r.status, r.reason, r.stderr)
    seen = eval(r.stdout)
    assert seen["bytes_errno"] == errno.ENOSPC, seen      # not the per-file file_size limit
    assert seen["files_errno"] == errno.ENOSPC and seen["files"] < 200, seen
    names = list(out.iterdir())
    assert 0 < len(names) <= 200
    assert disk_used(str(out)) <= (2 << 20) + 200 * 4096    # data + at most a block per name
    assert r.output["bytes"] <= 2 << 20 and r.output["error"] is None, r.output
    assert_inert(str(out))


# -- the copy-out as a property: whatever tree is left, what comes back is inert ----

def _build(top, spec):
    """Make a tree from hypothesis' spec: (kind, mode, data) per name, nested dirs."""
    import socket as _socket
    made = {"fifo": 0, "socket": 0}
    for i, (kind, mode, data) in enumerate(spec):
        p = os.path.join(top, f"n{i}")
        if kind == "file":
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, mode)
        elif kind == "sparse":
            with open(p, "wb") as f:
                f.truncate(1 << 20)
                f.write(data)
        elif kind == "dir":
            os.mkdir(p)
            made_sub = _build(p, [("file", mode, data)])
            for k in made:
                made[k] += made_sub[k]
            os.chmod(p, mode | 0o700)
        elif kind == "link":
            os.symlink(data.decode("latin-1") or "/etc/shadow", p)
        elif kind == "hardlink" and i > 0 and spec[0][0] == "file":
            os.link(os.path.join(top, "n0"), p)
        elif kind == "fifo":
            os.mkfifo(p)
            made["fifo"] += 1
        elif kind == "socket":
            s = _socket.socket(_socket.AF_UNIX)
            s.bind(p)
            s.close()
            made["socket"] += 1
    return made


try:
    from hypothesis import given, settings, strategies as st
except ImportError:   # pragma: no cover - hypothesis is in the test extras
    given = None

if given is not None:
    KINDS = st.sampled_from(["file", "sparse", "dir", "link", "hardlink", "fifo", "socket"])
    MODES = st.sampled_from([0o644, 0o4755, 0o2755, 0o6777, 0o1777, 0o000, 0o777, 0o100])
    ENTRY = st.tuples(KINDS, MODES, st.binary(max_size=64))

    @settings(derandomize=True, max_examples=40, deadline=None)
    @given(st.lists(ENTRY, max_size=12))
    def test_copy_out_hands_back_only_inert_regular_files_dirs_and_links(spec):
        import shutil
        import tempfile
        from sandbox.monitor.copy_out import copy_out
        base = tempfile.mkdtemp(prefix="sbx-copyout-")
        try:
            src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
            os.mkdir(src)
            os.mkdir(dst, 0o700)
            made = _build(src, spec)
            fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
            try:
                rep = copy_out(fd, dst, max_bytes=64 << 20, max_entries=1000)
            finally:
                os.close(fd)
            assert rep.error is None, rep
            assert rep.dropped_by.get("fifo", 0) == made["fifo"]
            assert rep.dropped_by.get("socket", 0) == made["socket"]
            assert_inert(dst)
            for path, st_ in walk(src):
                rel = os.path.relpath(path, src)
                twin = os.path.join(dst, rel)
                if stat.S_ISREG(st_.st_mode):
                    os.chmod(path, 0o600)
                    with open(path, "rb") as a, open(twin, "rb") as b:
                        assert a.read() == b.read(), rel
                elif stat.S_ISLNK(st_.st_mode):
                    assert os.readlink(twin) == os.readlink(path)
                elif not stat.S_ISDIR(st_.st_mode):
                    assert not os.path.lexists(twin), rel
            assert disk_used(dst) <= disk_used(src) + 4096 * (len(spec) + 1)
        finally:
            for base_, dirs, _ in os.walk(base):
                for d in dirs:
                    os.chmod(os.path.join(base_, d), 0o700)
            shutil.rmtree(base, ignore_errors=True)


def test_without_namespaces_the_output_is_made_inert_in_place(tmp_path):
    """best_effort without user namespaces: no mount view, so the program wrote to
    the host directory itself; the monitor applies the same rules there."""
    from test_fail_closed import run
    code = ("import os, shutil\nout = os.environ['SANDBOX_OUTPUT']\n"
            "shutil.copy('/bin/sh', out + '/rootsh'); os.chmod(out + '/rootsh', 0o4755)\n"
            "os.mkfifo(out + '/fifo'); os.mkdir(out + '/d', 0o777)\n"
            "open(out + '/d/f', 'w').write('x'); os.chmod(out + '/d/f', 0o666)\n"
            "open(out + '/ran', 'w').write('yes'); print('ran')")
    res = run(tmp_path, "userns", True, code=code, label="-inert")
    assert res["status"] == "ok" and res["ran"], res
    out = tmp_path / "out-userns-True-inert"
    assert_inert(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["d", "ran", "rootsh"]


def test_a_missing_top_level_directory_is_never_made_on_the_way(monkeypatch):
    """HOME=/nonexistent (a system user's) must not become a directory as a side
    effect of a run's state directory."""
    import time
    from sandbox.errors import OutputPathError
    top = f"/sbx-no-home-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.delenv("SANDBOX_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", top)
    with pytest.raises(OutputPathError, match="top-level"):
        Launcher(capture_output=True).spawn(RAN)
    assert not os.path.lexists(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root to switch")
def test_another_local_user_cannot_read_the_state_directory_or_a_run_output(monkeypatch):
    """Judged as that user: a process with uid/gid 65534 tries to list the state
    directory and the run's output and to read a file the run wrote. The state
    directory lives in a world-traversable place, so only its own modes protect it."""
    import shutil
    import tempfile
    base = tempfile.mkdtemp(dir="/var/tmp", prefix="sbx-state-")
    os.chmod(base, 0o755)
    try:
        monkeypatch.setenv("SANDBOX_HOME", os.path.join(base, "state"))
        r = Launcher(capture_output=True).spawn(
            ["sh", "-c", 'echo token-123 > "$SANDBOX_OUTPUT/secret"; chmod 644 "$SANDBOX_OUTPUT/secret"'])
        assert r.status == "ok", (r.reason, r.stderr)
        targets = [os.path.join(base, "state"), os.path.join(base, "state", "runs"),
                   r.output_dir, os.path.join(r.output_dir, "secret")]
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                for i, t in enumerate(targets):
                    try:
                        if os.path.basename(t) == "secret":
                            open(t).read()
                        else:
                            os.listdir(t)
                        code |= 1 << i          # it could: a leak
                    except PermissionError:
                        pass
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        leaked = [t for i, t in enumerate(targets) if os.waitstatus_to_exitcode(status) & (1 << i)]
        assert leaked == [], leaked
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_copy_out_bounds_the_hosts_disk_not_just_the_data():
    """Directories and long symlinks cost nothing on the output tmpfs but a block each on
    the host's disk, and a 1-byte file a whole block: a 128 MiB output left 151 MB on
    ext4 (found by an attacker's probe). `max_bytes` now bounds the disk the copy takes,
    measured here on a real disk filesystem (/var/tmp), not a tmpfs."""
    import tempfile
    from sandbox.monitor.copy_out import copy_out
    with tempfile.TemporaryDirectory(dir="/var/tmp") as top:
        src, dest = os.path.join(top, "src"), os.path.join(top, "dest")
        os.mkdir(src)
        for i in range(600):
            os.mkdir(os.path.join(src, f"d{i}"))
            os.symlink("/" + "x" * 120 + str(i), os.path.join(src, f"l{i}"))
            with open(os.path.join(src, f"f{i}"), "wb") as f:
                f.write(b"1")
        os.mkdir(dest, 0o700)
        fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
        try:
            rep = copy_out(fd, dest, max_bytes=1 << 20, max_entries=100_000)
        finally:
            os.close(fd)
        assert rep.dropped_by.get("over_budget", 0) > 0 and rep.error is None
        assert disk_used(dest) <= (1 << 20) + 4096, disk_used(dest)   # + dest's own block
