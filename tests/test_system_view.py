"""The system view, environment and defaults programs expect (issue 13 items 1, 4, 5, 6).

Judged from the host where the question is exposure: the host's files are
hashed before and after, listings made inside are compared with what the host
holds, and writes the sandbox tries are checked on the host's objects.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from sandbox.policy import resolve
from sandbox.policy.compare import is_narrower_or_equal
from sandbox.policy.loader import load_policy, parse_policy
from sandbox.policy.model import MiB, default_tmp_size
from sandbox.policy.variables import default_variables

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sandbox(*args: str, env: dict[str, str] | None = None, cwd: str = ROOT,
            **kw) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env=full, **kw)


def sh(script: str, *opts: str, **kw) -> subprocess.CompletedProcess:
    return sandbox("exec", *opts, "--", "bash", "-c", script, **kw)


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def py_json(code: str, *opts: str, **kw) -> dict:
    p = sandbox("exec", *opts, "--", sys.executable, "-I", "-c", code, **kw)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


# -- item 5: one identity for the environment and the passwd view ---------------------

def test_environment_agrees_with_the_passwd_view_and_home_is_private():
    host = {f: digest("/etc/" + f) for f in ("passwd", "group", "hosts")}
    real_home = os.path.expanduser("~")
    before = sorted(os.listdir(real_home)) if os.path.isdir(real_home) else None
    code = ("import os, pwd, json, getpass\n"
            "e = pwd.getpwuid(os.getuid())\n"
            "open(os.environ['HOME'] + '/.probe', 'w').write('x')\n"
            "print(json.dumps({k: os.environ.get(k) for k in "
            "('HOME', 'USER', 'LOGNAME', 'SHELL', 'TERM')} | {'pw': [e.pw_name, e.pw_dir, "
            "e.pw_shell], 'home_mode': oct(os.stat(os.environ['HOME']).st_mode & 0o777), "
            "'getuser': getpass.getuser(), 'shell_ok': os.access(os.environ['SHELL'], os.X_OK)}))")
    out = py_json(code, env={"TERM": "xterm-256color", "USER": "caller", "LOGNAME": "caller",
                             "SHELL": "/nonexistent"})
    assert out["HOME"] == out["pw"][1] == "/tmp/home"
    assert out["USER"] == out["LOGNAME"] == out["pw"][0] == out["getuser"]
    assert out["SHELL"] == out["pw"][2] and out["shell_ok"]
    assert out["TERM"] == "xterm-256color"
    assert out["home_mode"] == "0o700"
    # the host's files and the caller's real home were not touched
    assert host == {f: digest("/etc/" + f) for f in ("passwd", "group", "hosts")}
    if before is not None:
        assert sorted(os.listdir(real_home)) == before


def test_term_defaults_to_dumb_and_a_hostile_term_is_not_passed():
    env = {k: v for k, v in os.environ.items() if k != "TERM"}
    p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--", "sh", "-c",
                        'printf "%s" "$TERM"'], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.stdout == "dumb", p.stderr
    assert sh('printf "%s" "$TERM"', env={"TERM": "../../etc/passwd"}).stdout == "dumb"


def test_getent_agrees_and_the_other_entries_are_kept():
    p = sh('getent passwd "$(id -u)"; getent passwd 0 | cut -d: -f1; id -un; '
           'echo "HOME=$HOME"; wc -l < /etc/passwd')
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    entry = lines[0].split(":")
    assert entry[5] == "/tmp/home" and lines[3] == "HOME=/tmp/home"
    assert lines[1] == "root"                       # other users keep their entries
    assert lines[2] == entry[0]
    with open("/etc/passwd") as f:
        host_lines = len(f.read().splitlines())
    assert int(lines[4]) in (host_lines, host_lines + 1)


def test_generated_files_are_read_only_and_the_host_files_untouched(tmp_path):
    host = {f: digest("/etc/" + f) for f in ("passwd", "group", "hosts")}
    p = sh("for f in passwd group hosts; do (echo evil >> /etc/$f) 2>&1 | grep -o 'Read-only' "
           "|| echo WROTE-$f; done; mount -o remount,rw /etc/passwd 2>/dev/null || echo no-remount")
    assert p.stdout.split() == ["Read-only"] * 3 + ["no-remount"], p.stdout + p.stderr
    assert host == {f: digest("/etc/" + f) for f in ("passwd", "group", "hosts")}


def test_a_denied_passwd_is_not_replaced(tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text('extends = ["default"]\n[filesystem]\ndeny = ["/etc/passwd", "/etc/hosts"]\n')
    p = sh("cat /etc/passwd /etc/hosts 2>&1 | head -c 200; echo; cat /etc/group | head -c 5",
           "--policy", str(pol))
    assert "root:" not in p.stdout.splitlines()[0] and "127.0.1.1" not in p.stdout, p.stdout
    assert p.stdout.splitlines()[-1] == "root:"    # group is still the generated one


def test_the_host_name_resolves_to_loopback():
    p = sh('getent hosts "$(hostname)"; hostname')
    assert p.returncode == 0, p.stderr
    addr, name = p.stdout.split()[:2]
    assert addr in ("127.0.1.1", "::1") and name == p.stdout.split()[-1] == "sandbox"


# -- item 1: the system view ---------------------------------------------------------

def test_root_lists_only_names_of_the_view():
    view_names = set(sh("ls -a /").stdout.split())
    host_only = set(os.listdir("/")) - view_names
    # the view shows what the policy grants; the rest of the host's root is not even named
    assert {"usr", "etc", "tmp", "proc", "dev"} <= view_names
    assert host_only and not (host_only & view_names)
    home = os.path.expanduser("~")    # the state directory (${OUTPUT}) may live there
    for name in ("boot", "srv", "mnt", "media", "home", "run"):
        if os.path.exists("/" + name) and not ROOT.startswith("/" + name + "/") \
                and not home.startswith("/" + name + "/"):
            assert name not in view_names, name
    # listing is all it grants: nothing can be made at the top of the view
    assert "Read-only" in sh("touch /new 2>&1; mkdir /d 2>&1").stdout


def test_package_database_and_cpu_slice_only():
    p = sh("dpkg -s coreutils | grep '^Status'; ls /var/lib/apt/lists 2>&1 | head -1; "
           "ls /sys; ls /sys/devices; ls /sys/kernel 2>&1; nproc; "
           "echo 0 > /sys/devices/system/cpu/cpu1/online 2>&1 | head -1; "
           "touch /var/lib/dpkg/x 2>&1")
    out = p.stdout + p.stderr
    assert "Status: install ok installed" in out
    assert "/var/lib/apt/lists" in out and "No such file" in out
    assert "fs" in p.stdout.split() and "devices" in p.stdout.split()
    assert "kernel" not in p.stdout.split() and "class" not in p.stdout.split()
    assert "/sys/kernel': No such file" in out
    assert "Read-only" in out


def test_private_devpts_holds_only_the_sandbox_ptys():
    host_dev = os.stat("/dev/pts").st_dev if os.path.isdir("/dev/pts") else None
    code = ("import os, pty, json\n"
            "before = sorted(os.listdir('/dev/pts'))\n"
            "m, s = pty.openpty(); os.write(s, b'ping\\n')\n"
            "print(json.dumps({'before': before, 'after': sorted(os.listdir('/dev/pts')),"
            " 'echo': os.read(m, 64).decode(), 'name': os.ttyname(s),"
            " 'dev': os.stat('/dev/pts').st_dev, 'ptmx': os.readlink('/dev/ptmx')}))")
    out = py_json(code)
    assert out["before"] == ["ptmx"]                 # none of the host's ptys
    assert out["after"] == ["0", "ptmx"] and out["name"] == "/dev/pts/0"
    assert out["echo"].startswith("ping") and out["ptmx"] == "pts/ptmx"
    if host_dev is not None:
        assert out["dev"] != host_dev                  # a new devpts instance


def test_cgroup_view_is_the_sandbox_own_and_read_only():
    code = ("import os, json\n"
            "top = '/sys/fs/cgroup'\n"
            "ctrls = sorted(os.listdir(top))\n"
            "subdirs = {c: [d for d in os.listdir(f'{top}/{c}') if os.path.isdir(f'{top}/{c}/{d}')]"
            " for c in ctrls if os.path.isdir(f'{top}/{c}')}\n"
            "lim = None\n"
            "try:\n"
            "    lim = int(open(top + '/memory/memory.limit_in_bytes').read())\n"
            "except OSError: pass\n"
            "w = 'none'\n"
            "try:\n"
            "    open(top + '/memory/memory.limit_in_bytes', 'w').write('9999999999')\n"
            "    w = 'wrote'\n"
            "except OSError as e: w = e.strerror\n"
            "print(json.dumps({'ctrls': ctrls, 'subdirs': subdirs, 'limit': lim, 'write': w,"
            " 'self': open('/proc/self/cgroup').read()}))")
    out = py_json(code, "--policy", "strict")
    # never the host's other cgroups: no child cgroup of any other run or service
    assert all(d == [] for d in out["subdirs"].values()), out["subdirs"]
    if "memory" in out["ctrls"]:
        assert out["limit"] is not None and out["limit"] <= 512 * MiB + 64 * MiB
        assert out["write"] in ("Read-only file system", "none") and out["write"] != "wrote"
        assert "memory:/\n" in out["self"]
    else:
        # no cgroup of its own (e.g. an unprivileged caller without delegation): an empty
        # directory, honestly nothing, never the caller's or the host's tree
        assert out["ctrls"] == [] and out["limit"] is None


# -- item 4: programs in the work directory run ---------------------------------------

def test_default_runs_programs_of_the_work_directory_which_stays_untouched(tmp_path):
    """default: exec on the work directory; with copy-on-write asked for, writes go to
    its overlay and the host's directory stays untouched."""
    work = tmp_path / "w"
    work.mkdir()
    script = work / "run.sh"
    script.write_text("#!/bin/sh\necho ran; touch made && echo made\n")
    script.chmod(0o755)
    before = sorted(os.listdir(work))
    p = sandbox("exec", "--workdir", str(work), "--workdir-mode", "copy-on-write", "--",
                "./run.sh", cwd=str(work))
    assert (p.returncode, p.stdout) == (0, "ran\nmade\n"), p.stderr
    assert sorted(os.listdir(work)) == before
    p = sandbox("exec", "--policy", "strict", "--workdir", str(work), "--", "./run.sh",
                cwd=str(work))
    assert p.returncode == 126 and "exec" in p.stderr


# -- item 6: defaults ----------------------------------------------------------------

def test_tmp_size_scales_with_memory_unless_set(tmp_path):
    strict, default = load_policy("strict"), load_policy("default")
    assert strict.filesystem.tmp_size == strict.limits.memory // 2 == 256 * MiB
    assert default.filesystem.tmp_size == default.limits.memory // 2
    assert parse_policy('[filesystem]\ntmp_size = "8MiB"\n[limits]\nmemory = "1GiB"\n'
                        ).filesystem.tmp_size == 8 * MiB
    assert default_tmp_size(None) == 64 * MiB and default_tmp_size(1 * MiB) == 16 * MiB
    size = int(sh("stat -f -c '%b %S' /tmp | awk '{print $1 * $2}'", "--policy", "strict",
                  "--memory", "300MiB").stdout)
    assert size == 150 * MiB


def test_a_hundred_live_threads_under_strict():
    # with a memory cgroup or with the RLIMIT_AS fallback (smaller default thread stacks)
    code = ("import threading; b = threading.Barrier(101, timeout=20)\n"
            "ts = [threading.Thread(target=b.wait) for _ in range(100)]\n"
            "[t.start() for t in ts]; b.wait(); [t.join() for t in ts]; print('ok')")
    p = sandbox("exec", "--policy", "strict", "--", sys.executable, "-I", "-c", code)
    assert (p.returncode, p.stdout) == (0, "ok\n"), p.stderr


def test_build_policy_sits_between_strict_and_default(tmp_path):
    v = default_variables(str(tmp_path), str(tmp_path / "out"))
    strict, build, default = (resolve(load_policy(n), v) for n in ("strict", "build", "default"))
    assert build.description and "audit" in build.description
    assert is_narrower_or_equal(build, default)[0]
    assert not is_narrower_or_equal(build, strict)[0]
    assert build.network.mode == "none" and build.audit.files == "denied"
    assert "µs" in strict.description and "audit" in strict.description


def test_a_spare_made_before_the_request_shows_its_own_cgroup_and_identity(launcher):
    launcher.spawn(["true"])                   # the next run is served by a spare
    r = launcher.spawn(["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                        "2>/dev/null || echo none; ls /dev/pts; echo \"$HOME\"; "
                        "getent passwd \"$(id -u)\" | cut -d: -f6"], policy="strict")
    assert r.warm and r.status == "ok", r.stderr
    limit, pts, home, pw_home = r.stdout.split()
    if r.limits_applied.get("memory") == "cgroup-v1":
        assert int(limit) == 512 * MiB            # the limit written after the spare was made
    else:
        assert limit == "none"
    assert (pts, home, pw_home) == ("ptmx", "/tmp/home", "/tmp/home")
