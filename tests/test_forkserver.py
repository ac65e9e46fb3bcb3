"""The warm fork server: default path, restart after death, exec fallback, concurrency."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sandbox.launcher.launcher import Launcher

pytestmark = pytest.mark.isolation


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_runs_go_through_the_fork_server_by_default():
    launcher = Launcher()
    r = launcher.spawn(["true"])
    server = launcher.forkserver_pid
    assert r.status == "ok" and server is not None
    assert r.pids["monitor"] == server   # the fork server's process is the monitor host


def _sleeps() -> int:
    n = 0
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                n += f.read() == b"sleep\x0030\x00"
        except OSError:
            pass
    return n


def test_one_monitor_process_supervises_every_sandbox_of_a_launcher():
    """Issue 14: no monitor process per sandbox. Five sandboxes alive at once are all
    supervised by the launcher's one monitor host, whose only child is its zygote
    (the stubs are the zygote's children)."""
    from sandbox.monitor.tree import children_map
    with Launcher(capture_output=True) as launcher:
        handles = [launcher.start(["sleep", "30"], policy="default") for _ in range(5)]
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    all(h.pid for h in handles)
                    and len(children_map().get(launcher.forkserver_pid or 0, [])) == 1
                    and _sleeps() >= 5):
                time.sleep(0.05)
            server = launcher.forkserver_pid
            assert server is not None
            kids = children_map().get(server, [])
            assert len(kids) == 1, kids                       # the zygote, nothing else
            stubs = children_map().get(kids[0], [])
            assert len(stubs) >= 5, stubs                     # the five stubs (+ the spare)
            assert {h.pid for h in handles} == {server}
        finally:
            for h in handles:
                h.cancel()
            results = [h.wait() for h in handles]
    assert [r.status for r in results] == ["cancelled"] * 5, [r.reason for r in results]
    assert {r.pids["monitor"] for r in results} == {server}


def test_a_dead_fork_server_is_restarted_and_the_run_succeeds():
    launcher = Launcher()
    assert launcher.spawn(["true"]).status == "ok"
    old = launcher.forkserver_pid
    os.kill(old, signal.SIGKILL)
    for _ in range(100):  # until the kernel has reaped it for our Popen
        if launcher._forkserver._proc.poll() is not None:
            break
        time.sleep(0.01)
    r = launcher.spawn(["true"])
    assert r.status == "ok", r.reason
    assert launcher.forkserver_pid not in (None, old)


def test_exec_path_without_the_fork_server_still_works():
    r = Launcher(start="exec", capture_output=True).spawn(["/bin/echo", "x"])
    assert (r.status, r.stdout) == ("ok", "x\n")
    assert r.pids["monitor_parent"] == os.getpid()


def test_there_is_no_direct_fork_start_mode():
    """A monitor forked from the caller's process would hand the caller's environment
    and heap to PID 1 (tests/test_environ_canary.py searches for them)."""
    from sandbox.errors import InputError
    with pytest.raises(InputError, match="forkserver, exec"):
        Launcher(start="fork")


def test_template_stays_small():
    launcher = Launcher()
    launcher.spawn(["true"])
    # fork cost grows with the template's resident memory: it holds only the runtime
    assert _rss_kib(launcher.forkserver_pid) < 64 * 1024


def test_many_sandboxes_at_once_from_threads():
    launcher = Launcher(capture_output=True, max_concurrent=4)
    results, errors = [], []

    def worker(n):
        try:
            for i in range(3):
                results.append(launcher.spawn(["sh", "-c", f"echo {n}-{i}"]))
        except Exception as exc:  # reported below, never lost
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.stdout for r in results) == sorted(f"{n}-{i}\n" for n in range(8)
                                                       for i in range(3))
    assert all(r.status == "ok" for r in results)


def test_runs_are_served_by_a_spare_prepared_before_the_request():
    launcher = Launcher(capture_output=True)
    launcher.spawn(["true"])
    r = launcher.spawn(["/bin/echo", "warm"])
    assert (r.status, r.stdout, r.warm) == ("ok", "warm\n", True)
    # the spare's stub entered every namespace before the run was known
    assert r.layers[:3] == ["namespaces", "mounts", "network:none"]


def test_a_spare_cannot_serve_a_host_network_run_and_steps_aside(tmp_path):
    pol = tmp_path / "host.toml"
    pol.write_text('extends = ["default"]\n[network]\nmode = "host"\n')
    launcher = Launcher(capture_output=True)
    launcher.spawn(["true"])
    r = launcher.spawn(["/bin/echo", "host"], policy=str(pol))
    assert (r.status, r.stdout, r.warm) == ("ok", "host\n", False)
    assert "network:host" in r.layers
    assert launcher.spawn(["true"]).warm is True  # the next spare is made and used


def test_limits_reach_a_spare_made_before_they_were_known(tmp_path):
    from sandbox.monitor import cgroups
    pol = tmp_path / "p.toml"
    pol.write_text('extends = ["strict"]\n[limits]\nprocesses = 7\n')
    launcher = Launcher(capture_output=True)
    launcher.spawn(["true"])
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_NPROC)[0])"
    import sys
    r = launcher.spawn([sys.executable, "-I", "-c", code], policy=str(pol))
    assert r.warm and r.status == "ok" and r.stdout == "7\n"
    pids = cgroups.probe().controllers.get("pids")
    if pids is not None and pids.usable:
        assert r.limits_applied["processes"] == f"cgroup-{pids.version}"
    else:
        assert r.limits_applied["processes"] == "rlimit"


def test_spares_can_be_turned_off(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "cold.py"
    script.write_text("from sandbox.launcher.launcher import Launcher\n"
                      "L = Launcher()\nL.spawn(['true'])\nprint(L.spawn(['true']).warm)\n")
    env = {**os.environ, "SANDBOX_SPARE": "0"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert out.stdout == "False\n", out.stderr


def test_a_finished_launcher_leaves_no_cgroup_behind(tmp_path):
    import subprocess
    import sys
    from sandbox.monitor import cgroups
    script = tmp_path / "one.py"
    # the launcher's own pid and its children's (the monitor host): the owners its
    # cgroups are named after (`sandbox-<owner pid>-...`). Judging only those, not
    # every stale cgroup on the machine, keeps another process's leftovers (a shared
    # machine, a killed test run) from failing this test.
    script.write_text("import os\nfrom sandbox.launcher.launcher import Launcher\n"
                      "L = Launcher()\nL.spawn(['true'])\nprint(L.spawn(['true']).warm)\n"
                      "me = os.getpid()\n"
                      "kids = open(f'/proc/{me}/task/{me}/children').read().split()\n"
                      "print(' '.join([str(me), *kids]))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    warm, owners = out.stdout.splitlines()
    assert warm == "True", out.stderr
    assert len(owners.split()) >= 2, owners   # the launcher and at least its host
    sup = cgroups.probe()
    bases = {s.base for s in sup.controllers.values() if s.usable and s.base}
    if sup.v2_base:
        bases.add(sup.v2_base)
    if not bases:
        pytest.skip("no cgroup hierarchy this user may write: a launcher makes no cgroup")
    prefixes = tuple(f"{cgroups.PREFIX}{pid}-" for pid in owners.split())
    # its spare (made after the last run) freed its cgroups when the fork server ended
    left = [os.path.join(b, n) for b in sorted(str(b) for b in bases)
            for n in os.listdir(b) if n.startswith(prefixes)]
    assert left == []
