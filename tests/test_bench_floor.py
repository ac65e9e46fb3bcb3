"""The floors `sandbox bench` names beside its missed speed targets (issue 15 "Done when"):
the bare hops (sandbox/bench/bare.py) and the CPU per run by process (cpu.py)."""
from __future__ import annotations

import os
import threading

from sandbox.bench import targets
from sandbox.bench.bare import BareHost
from sandbox.bench.cpu import PARTS, CpuMeter, cap_per_s


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_bare_hops_run_the_program_and_leave_nothing_behind():
    host = BareHost()
    host.run()   # the host is up, its zygote forked
    server = host._proc.pid
    with open(f"/proc/{server}/task/{server}/children") as f:
        zygote = int(f.read().split()[0])
    errors: list[BaseException] = []

    def runs() -> None:
        try:
            for _ in range(10):
                host.run()
        except BaseException as exc:
            errors.append(exc)
    threads = [threading.Thread(target=runs) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    host.close()
    assert host._proc.returncode == 0
    assert not _alive(zygote)


def test_a_missed_round_trip_and_rate_name_their_floor():
    row = {"concurrency": 4, "sandbox_per_s": 30.0, "bwrap_per_s": 300.0, "bare_per_s": 500.0,
           "cpu_ms_per_run": {"launcher": 5.0, "host_loop": 3.0, "host_threads": 2.0,
                              "zygote": 1.0, "sandbox": 20.0, "total": 31.0},
           "cpu_cap_per_s": cap_per_s(31.0, 2)}
    res = {"round_trip": {"bwrap": {"median_ms": 4.0}, targets.BARE: {"median_ms": 2.0},
                          "sandbox no-op action": {"median_ms": 30.0}},
           "throughput": [row]}
    rt, rate = targets.evaluate(res)[:2]
    assert rt.verdict == "MISS" and "bare hops 2.0 ms (0.5x)" in rt.note
    assert rate.verdict == "MISS"
    # 31 ms caps 2 CPUs at 64.5/s; 0.75 x bwrap's 300/s = 225/s needs 2000/225 = 8.89 ms
    assert "31.0 ms of CPU per run caps it at 64.5/s (sandbox 20.0 ms, 0.75x bwrap needs " \
        "<= 8.89 ms)" in rate.note
    assert "bare hops 500.0/s" in rate.note
    # nothing measured, no floor claimed
    rt, rate = targets.evaluate({"round_trip": {"bwrap": {"median_ms": 4.0}},
                                 "throughput": [{"concurrency": 4, "sandbox_per_s": 1.0,
                                                 "bwrap_per_s": 2.0}]})[:2]
    assert rt.note == "" and rate.note == ""


def test_the_cpu_meter_counts_every_process_of_a_launcher(tmp_path):
    from sandbox.launcher.launcher import Launcher
    with Launcher(history=False, audit_db=str(tmp_path / "audit")) as launcher:
        assert launcher.spawn(["/bin/true"], policy="strict").status == "ok"
        meter = CpuMeter(launcher.forkserver_pid or 0)
        meter.start()
        for _ in range(3):
            assert launcher.spawn(["/bin/true"], policy="strict").status == "ok"
        cpu = meter.stop(3)
    assert set(cpu) == {*PARTS, "total"}
    assert all(v >= 0 for v in cpu.values())
    # three stubs and PID 1s were reaped by the zygote: their CPU is counted there
    assert cpu["sandbox"] > 0 and cpu["total"] == round(sum(cpu[k] for k in PARTS), 2)
    assert os.cpu_count() and cap_per_s(cpu["total"]) is not None


def test_the_cpu_split_runs_from_the_command_line(tmp_path):
    import subprocess
    import sys
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "state")}
    p = subprocess.run([sys.executable, "-m", "sandbox.bench.cpu", "3", "--exec"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    line = p.stdout.strip()
    assert line.startswith("CPU per warm strict run (exec, 3 runs") and "runs/s on" in line, line
    for part in PARTS:
        assert f"{part} " in line, line
    for args in (["0"], ["many"], ["3", "4"]):
        bad = subprocess.run([sys.executable, "-m", "sandbox.bench.cpu", *args], env=env,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, (args, bad.stderr)
        assert "Traceback" not in bad.stderr
