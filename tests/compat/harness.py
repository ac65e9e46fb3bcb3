"""Run one workload directly, under `sandbox exec`, or under bubblewrap, and compare.

Every mode gets the same script, stdin and a fresh copy of the work
directory, and the same small environment (PATH, LANG, TERM, and ``PY``,
the interpreter this suite runs on, which has pytest). The direct run is the
reference: a mode *matches* when its exit status and stdout equal the direct
run's, *fails* when its exit status differs, and is *silently wrong* when
the status is the same but the output is not -- the worst outcome, because
nothing tells the user.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from compat.workloads import Workload

TIMEOUT = 120
# Lexically normalised: the matrix runs as ../.venv/bin/python from tests/, and a
# "tests/.." on the way is not in the sandbox's view (the venv's bin is, via ${PYTHON})
PYTHON = os.path.abspath(sys.executable)
SANDBOX = os.path.join(os.path.dirname(PYTHON), "sandbox")
_ME = pwd.getpwuid(os.getuid())
# What a login shell of this user has: the sandbox must make its own consistent
# version of HOME, USER, LOGNAME and SHELL, not inherit these.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "xterm",
            "PY": PYTHON, "HOME": _ME.pw_dir, "USER": _ME.pw_name,
            "LOGNAME": _ME.pw_name, "SHELL": _ME.pw_shell or "/bin/sh",
            # the cold path, always: a daemon already running for this user (another
            # checkout's, on a shared machine) would otherwise serve the runs with its
            # own code and its own ${PYTHON}, and "$PY" was then not in the view
            "SANDBOX_DAEMON": "0"}


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def brief(self) -> str:
        tail = (self.stderr.strip().splitlines() or [""])[-1][:160]
        return f"exit {self.code}; stdout {self.stdout[:120]!r}; stderr {tail!r}"


def _workdir(w: Workload, root: str) -> str:
    work = os.path.join(root, "work")
    os.makedirs(work)
    for rel, text in w.files.items():
        path = os.path.join(work, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        if rel in w.executable:
            os.chmod(path, 0o755)
    return work


def _command(mode: str, w: Workload, work: str) -> list[str]:
    script = w.script
    if mode == "direct":
        return ["bash", "-c", script]
    if mode == "bwrap":
        return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--tmpfs", "/tmp", "--bind", work, work,
                "--chdir", work, "--unshare-all", "--die-with-parent", "--new-session",
                "bash", "-c", script]
    return [SANDBOX, "exec", "--policy", mode, "--workdir", work, "--env", f"PY={PYTHON}",
            "--", "bash", "-c", script]


def run(mode: str, w: Workload) -> Outcome:
    """Run `w` in `mode` ("direct", "bwrap", or a policy name)."""
    root = tempfile.mkdtemp(prefix=f"compat-{w.name}-")
    try:
        os.chmod(root, 0o755)
        work = _workdir(w, root)
        try:
            proc = subprocess.run(_command(mode, w, work), cwd=work, env=BASE_ENV,
                                  input=w.stdin if w.stdin is not None else b"",
                                  capture_output=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return Outcome(-1, "", f"harness: no end within {TIMEOUT} s")
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return Outcome(code, _norm(proc.stdout, work),
                       proc.stderr.decode(errors="replace"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _norm(out: bytes, work: str) -> str:
    text = out.decode(errors="replace").replace(work, "<work>")
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines())


def verdict(ref: Outcome, got: Outcome) -> str:
    """'match', 'fails' or 'wrong' (same exit status, different output)."""
    if got.code == ref.code and got.stdout == ref.stdout:
        return "match"
    if got.code == ref.code or (got.code == 0 and ref.code != 0):
        return "wrong"
    return "fails"


def memory_mechanism(policy: str) -> str:
    """What bounds memory under `policy` for this caller: ``cgroup-v1``, ``cgroup-v2``
    or ``rlimit`` (the RunResult's limits_applied, from a real run)."""
    import json
    root = tempfile.mkdtemp(prefix="compat-mem-")
    try:
        result = os.path.join(root, "r.json")
        subprocess.run([SANDBOX, "exec", "--policy", policy, "--workdir", root, "--result", result,
                        "--", "/bin/true"], env=BASE_ENV, capture_output=True, timeout=TIMEOUT,
                       check=True)
        with open(result) as f:
            return str(json.load(f).get("limits_applied", {}).get("memory", ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def available(w: Workload) -> bool:
    return all(shutil.which(tool) for tool in w.needs)
