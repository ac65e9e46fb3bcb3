"""The namespace-wide layers run in a throw-away child of PID 1 (sandbox/isolation/apart.py).

PID 1 keeps no copy of what they wrote (a Python action's PID 2 would inherit
it), yet takes back all they leave to it: descriptors, variables, the layers
applied or skipped; an error comes back as it was raised, and a child that
ends without its answer fails the run (never a layer silently unapplied).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from sandbox.launcher.launcher import Launcher
from sandbox.workflow import Workflow

RELAY = textwrap.dedent("""
    import json, os, tempfile
    from sandbox.errors import SetupError
    from sandbox.isolation import apart, contain
    from sandbox.isolation.context import ContainContext, RunPaths
    from sandbox.policy.model import Policy
    from sandbox.policy.plan import FsPlan

    def ctx(best_effort=False):
        d = tempfile.mkdtemp()
        pol = Policy.from_dict({**Policy().to_dict(), "best_effort": best_effort})
        return ContainContext(policy=pol, paths=RunPaths(d, d, d, d), fs_plan=FsPlan(),
                              ipc_fd=-1, monitor_fd=-1)

    def attempt(layer, best_effort=False):
        c = ctx(best_effort)
        try:
            apart.run(c, [("mounts", layer)], contain._apply,
                      os.open(os.devnull, os.O_WRONLY))
        except SetupError as exc:
            return {"layer": exc.layer, "text": str(exc), "pid": os.getpid()}
        return {"active": c.active, "skipped": c.skipped, "env": os.environ.get("APART"),
                "fd_ok": c.scratch_fd in c.keep_fds and os.path.samestat(
                    os.fstat(c.scratch_fd), os.stat(os.devnull)),
                "timed": "mounts" in c.timings}

    def dies(c):
        os._exit(0)

    def refuses(c):
        raise SetupError("mounts", "cannot bind /nowhere")

    def breaks(c):
        raise ValueError("boom")

    def works(c):
        c.scratch_fd = os.open(os.devnull, os.O_RDONLY)
        os.environ["APART"] = str(os.getpid())
        c.active.append("mounts")

    print(json.dumps({"dies": attempt(dies), "refuses": attempt(refuses),
                      "breaks": attempt(breaks), "skips": attempt(refuses, True),
                      "works": attempt(works), "me": os.getpid()}))
""")


def test_the_setup_child_relays_its_results_and_fails_closed():
    out = subprocess.run([sys.executable, "-I", "-c", RELAY], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    # a child that ends without its answer: the layer fails, it is never taken as applied
    assert got["dies"]["layer"] == "mounts" and "without an answer" in got["dies"]["text"]
    # an error comes back with its layer and text as raised (PID 1 reports them so)
    assert got["refuses"]["layer"] == "mounts"
    assert got["refuses"]["text"] == "mounts: cannot bind /nowhere"
    assert got["breaks"] == {"layer": "sandboxee", "text": "ValueError: boom",
                             "pid": got["me"]}
    # best_effort: recorded as skipped in PID 1's context, as in PID 1 itself
    assert got["skips"]["skipped"] == {"mounts": "mounts: cannot bind /nowhere"}
    # what the layer leaves to the process comes back: its descriptor, its variable
    works = got["works"]
    assert works["active"] == ["mounts"] and works["fd_ok"] and works["timed"]
    assert works["env"] not in (None, str(got["me"]))   # set by the child, taken by PID 1


def test_pid1_keeps_no_copy_of_the_namespace_layers_pages():
    """SANDBOX_MEMTRACE's marks (docs/benchmarks-journal.md): PID 1's private pages grew by
    ~1.1 MiB over the namespace, mount and network layers when it ran them itself
    (a Python action's PID 2 inherits them); their child takes them away with it.
    The median of five runs, either way of which a single run can be off: PID 1's
    first mark is taken 50 ms after it starts, and on a loaded machine the stub may
    exec later, its shared pages turning PID 1's own between two marks (larger); the
    setup child may not have finished exiting when the plan's mark is read, PID 1's
    pages still shared with it (smaller, even below the first mark: it is reaped only
    before the program exists)."""
    code = textwrap.dedent("""
        import json, os
        os.environ["SANDBOX_MEMTRACE"] = "1"
        from sandbox.launcher.launcher import Launcher
        from sandbox.bench.spawn import _workflow
        out = []
        with Launcher() as la:
            for _ in range(5):
                r = la.spawn(_workflow("bench.noop"), policy="default")
                out.append([r.status, {k[10:]: v for k, v in r.timings.items()
                                       if k.startswith("layer.mem.")}])
        print(json.dumps(out))
    """)
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout.splitlines()[-1])
    assert [status for status, _ in runs] == ["ok"] * 5
    marks = [m for _, m in runs]
    # PID 1 takes the child's plan (sandbox/sandboxee/planned.py): the namespace layers,
    # the spec's decoding and the context were ~1.1 MiB of its own when it ran them
    grown_kib = sorted(m["pid1.plan"] - m["pid1.start"] for m in marks)[2]
    assert grown_kib < 800, marks
    # the Landlock ruleset and the seccomp program are made by the child too (contain's
    # `_ahead`): PID 1 only enforces them (~390 KiB when it built them itself)
    enforce_kib = sorted(m["pid1.seccomp"] - m["pid1.privileges"] for m in marks)[2]
    assert enforce_kib < 250, marks


def _action(tmp_path, name: str, imports: str, body: str) -> Workflow:
    """A one-action workflow whose action `name` (module `name` in `tmp_path`, which
    the sandbox may read) runs `body` after `imports`."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / f"{name}.py").write_text(
        f"{imports}\nfrom sandbox.workflow import action\n\n"
        f"@action('{name}')\ndef {name}(ctx):\n{body}")
    return Workflow.from_dict({"id": "w", "imports": [name],
                               "stages": [{"id": "s", "actions": [{"name": name}]}]})


def test_the_program_is_pid_2_in_its_workdir_with_the_layers_applied(tmp_path):
    """An exec'd program (PID 1 applies every layer itself: module doc of apart.py)
    and a Python action (the setup child applies the first three) see the same."""
    wf = _action(tmp_path, "whoami", "import os, socket",
                 "    ctx.store['me'] = f'{os.getpid()} {os.getcwd()} {socket.gethostname()}'\n")
    with Launcher() as la:
        r = la.spawn(["sh", "-c", 'echo "$$ $(pwd) $(hostname)"'], policy="default",
                     workdir=str(tmp_path), capture_output=True)
        action = la.spawn(wf, policy="default", workdir=str(tmp_path),
                          code_paths=[str(tmp_path)])
    assert r.status == "ok", r
    assert r.stdout == f"2 {tmp_path} sandbox\n", r.stdout
    assert r.layers[:3] == ["namespaces", "mounts", "network:none"], r.layers
    assert action.status == "ok", action.reason
    assert action.store["me"] == f"2 {tmp_path} sandbox"
    assert action.layers == r.layers


def test_the_program_meets_no_process_but_pid_1(tmp_path):
    """The setup child is reaped before the program exists (apart.reap): an exec'd
    program and a Python action list exactly PID 1 and themselves in their /proc, and
    are PID 2 (the child took pid 3 and went on exiting beside PID 1's last layers)."""
    wf = _action(tmp_path, "procs", "import os",
                 "    ctx.store['procs'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
                 "    ctx.store['me'] = os.getpid()\n")
    with Launcher() as la:
        for _ in range(5):
            r = la.spawn(["ls", "/proc"], policy="strict", capture_output=True)
            assert r.status == "ok", r.reason
            assert sorted(int(p) for p in r.stdout.split() if p.isdigit()) == [1, 2], r.stdout
            action = la.spawn(wf, policy="strict", workdir=str(tmp_path),
                              code_paths=[str(tmp_path)])
            assert action.status == "ok", action.reason
            assert (action.store["procs"], action.store["me"]) == ([1, 2], 2)


REAP = textwrap.dedent("""
    import json, os
    from sandbox.isolation import apart
    r, w = os.pipe()

    def work(sock):
        sock.send(b"answer")
        os.read(r, 1)          # ends only when the parent says so

    last = os.open(os.devnull, os.O_WRONLY)
    data, fds = apart.in_child(work, last, 0)
    pid = apart._UNREAPED[0]
    running = os.waitpid(pid, os.WNOHANG) == (0, 0)
    os.write(w, b"x")
    apart.reap()
    try:
        os.waitpid(pid, os.WNOHANG)
        reaped = False
    except ChildProcessError:
        reaped = True
    print(json.dumps({"data": data.decode(), "running": running, "reaped": reaped,
                      "left": apart._UNREAPED}))
""")


def test_pid1_goes_on_before_the_setup_child_ends_and_reaps_it_before_the_program():
    """`in_child` returns once the answer is in, the child still running (its exit is
    no longer on the run's path); `reap` (called as the program is made) waits for it."""
    p = subprocess.run([sys.executable, "-c", REAP], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"data": "answer", "running": True, "reaped": True,
                                    "left": []}
