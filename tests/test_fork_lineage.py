"""The sandboxee's forks without CPython's at-fork hooks, and the template's share of the work.

A Python action's PID 2 is a fork of PID 1, a fork of the stub, a fork of the
zygote; every page one of them writes is copied and, once the stub and PID 1
have exec'd, PID 2's own (docs/benchmarks-journal.md). So the zygote, the stub and
PID 1 fork with `forking.fork_single_threaded` (no at-fork hooks: they are
single-threaded), and the work every sandbox would do the same way is done
once in the template (sandbox.sandboxee.template). What the hooks did that
still matters is asserted here: every action draws its own random numbers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sandbox.launcher.launcher import Launcher

ACTIONS = textwrap.dedent("""
    import random
    from sandbox.workflow import action

    @action("lineage.draw")
    def draw(ctx):
        ctx.store["draw"] = [random.random(), random.getrandbits(64)]
""")


@pytest.fixture
def action_dir(tmp_path):
    (tmp_path / "lineage_actions.py").write_text(ACTIONS)
    return str(tmp_path)


def test_each_python_action_draws_its_own_random_numbers(action_dir):
    """`random`'s state is the template's in every fork that skipped its at-fork
    reseed: the worker reseeds it, or every action would draw the same numbers."""
    wf = {"name": "draw", "imports": ["lineage_actions"],
          "stages": [{"actions": [{"name": "lineage.draw"}]}]}
    with Launcher() as la:
        draws = []
        for _ in range(3):
            r = la.spawn(wf, code_paths=[action_dir], policy="strict")
            assert r.status == "ok", (r.reason, r.error)
            draws.append(tuple(r.store["draw"]))
    assert len(set(draws)) == 3, draws


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-I", "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_fork_without_hooks_runs_python_in_the_child():
    out = _python("""
        import os
        from sandbox.sandboxee import forking
        r, w = os.pipe()
        pid = forking.fork_single_threaded()
        if pid == 0:
            os.write(w, f"{os.getpid()} {os.getppid()}".encode())
            os._exit(7)
        os.close(w)
        child, parent = map(int, os.read(r, 100).split())
        _, st = os.waitpid(pid, 0)
        print(child == pid, parent == os.getpid(), os.waitstatus_to_exitcode(st))
    """)
    assert out.split() == ["True", "True", "7"]


def test_a_fork_without_hooks_is_refused_where_threads_run():
    """Skipping the hooks is only sound with one thread: no lock another thread holds
    at the fork, no thread the child would believe alive."""
    out = _python("""
        import threading
        from sandbox.sandboxee import forking
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        try:
            forking.fork_single_threaded()
        except RuntimeError as exc:
            print("refused:", exc)
        finally:
            stop.set()
            t.join()
    """)
    assert out.startswith("refused:")


def test_the_template_plugs_the_allocators_free_blocks():
    """`plug_free_blocks` reads pymalloc's free blocks per size class (its 32 classes,
    from sys._debugmallocstats) and fills them: a fork's new objects then go to
    dense fresh pools, not one block in each of the template's pages."""
    out = _python("""
        import json
        from sandbox.monitor.preload import warm
        from sandbox.sandboxee import template
        warm()
        before = template._avail_blocks()
        template.plug_free_blocks()
        after = template._avail_blocks()
        print(json.dumps([sorted(before), sum(before.values()), sum(after.values())]))
    """)
    sizes, before, after = json.loads(out)
    assert sizes == [16 * (i + 1) for i in range(32)]
    assert after < before / 2, (before, after)


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_memtrace_reports_the_private_memory_of_each_phase(compiled):
    """SANDBOX_MEMTRACE=1 (docs/benchmarks-journal.md): the stub's and PID 1's Private_Dirty at
    each phase, in RunResult.timings, in KiB; it grows along the sequence. The compiled
    stub (sandbox/_native/stub_fork.c) runs no Python, so it has no marks of its own:
    PID 1's come first ("stub.spec" is PID 1's, as it was)."""
    out = _python(f"""
        import json, os
        os.environ["SANDBOX_MEMTRACE"] = "1"
        os.environ["SANDBOX_STUB_C"] = "{compiled}"
        from sandbox.launcher.launcher import Launcher
        from sandbox.bench.spawn import _workflow
        with Launcher() as la:
            r = la.spawn(_workflow("bench.noop"), policy="strict")
        print(json.dumps([r.status, {{k[10:]: v for k, v in r.timings.items()
                                     if k.startswith("layer.mem.")}}]))
    """)
    status, marks = json.loads(out.splitlines()[-1])
    assert status == "ok"
    stub = ["stub.forked", "stub.unshared"]
    phases = ["stub.spec", "stub.context", "pid1.start", "pid1.plan", "pid1.privileges",
              "pid1.seccomp", "pid1.ready"]
    if compiled == "0":
        phases = stub + phases
    else:
        assert not any(p in marks for p in stub), marks
    assert all(marks.get(p, 0) > 0 for p in phases), marks
    assert marks["pid1.ready"] >= marks[phases[0]], marks


def test_the_worker_rehearsal_leaves_no_thread_and_no_action_behind():
    """The template runs a no-op action through the worker (`template.rehearse_worker`)
    before the zygote forks: the host must still have one thread (the zygote is
    forked from it), and the registry user actions resolve in must not gain it."""
    out = _python("""
        import sys, threading
        from sandbox.monitor.preload import warm
        from sandbox.workflow.registry import default_registry
        before = (sorted(default_registry.names()), sys.dont_write_bytecode)
        warm()
        after = (sorted(default_registry.names()), sys.dont_write_bytecode)
        print(threading.active_count(), before == after)
    """)
    assert out.split() == ["1", "True"]
