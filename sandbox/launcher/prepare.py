"""Turning a spawn request into a run: policy, directories, environment.

Everything here happens in the launcher before any process starts, so a bad
policy or workflow fails with an `InputError` and nothing runs.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Sequence

import sandbox
from sandbox.launcher import tidy, workdir_cow
from sandbox.errors import InputError
from sandbox.isolation.context import RunPaths
from sandbox.launcher.output_path import private_dir
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule
from sandbox.policy.sources import Sources
from sandbox.protocol import MAX_ARG_STRLEN, POLICY_SOURCES_MAX, PolicySource

if TYPE_CHECKING:
    from threading import Event

    from sandbox.policy.confine import Ceiling

DEFAULT_POLICY = "default"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
RUNTIME_DIR = os.path.dirname(os.path.abspath(sandbox.__file__))


def state_dir() -> str:
    """Where outputs of runs and the audit database live (overridable: $SANDBOX_HOME)."""
    env = os.environ.get("SANDBOX_HOME")
    if env:
        return env
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return os.path.join(base, "sandbox")


def state_subdir(*names: str) -> str:
    """``<state>/<names...>``, every level private to the caller (0700), made safely.

    The one way to make a directory under the state directory: walked from
    ``/`` without following others' links, never creating a top-level
    directory (a HOME that does not exist, such as a system user's
    ``/nonexistent``, is an error, not something to create).
    """
    path = private_dir(state_dir(), what="state directory ($SANDBOX_HOME)", empty=False,
                       system_check=False)
    for name in names:
        path = private_dir(os.path.join(path, name), what="state directory", empty=False,
                           system_check=False)
    return path


def run_output_dir(run_id: str) -> str:
    """``<state>/runs/<run_id>/output``, every level private to the caller (0700).

    The state directory also holds the audit store (argv, tokens): an
    existing one made readable by an older version is tightened here.
    """
    runs = state_subdir("runs")
    return private_dir(os.path.join(runs, run_id, "output"), what="run output directory",
                       system_check=False)


def load(policy: Policy | str | None, fallback: str | None = None) -> Policy:
    return load_sourced(policy, fallback)[0]


def load_sourced(policy: Policy | str | None, fallback: str | None = None
                 ) -> tuple[Policy, Sources]:
    """The policy and the files it was read from (none for a Policy object): what a
    warm pool kept for it depends on (sandbox.monitor.pools)."""
    if isinstance(policy, Policy):
        return policy, ()
    from sandbox.policy.loader import load_policy_sourced
    return load_policy_sourced(policy or fallback or DEFAULT_POLICY)


def wire_sources(sources: Sources) -> list[PolicySource]:
    """`sources` for the spec; none past POLICY_SOURCES_MAX (the run is then pooled by
    its content alone, never refused for it)."""
    if len(sources) > POLICY_SOURCES_MAX or any(len(s.path) > 4096 for s in sources):
        return []
    return [PolicySource(path=s.path, sha256=s.sha256, ino=s.ino, dev=s.dev, size=s.size,
                         mtime_ns=s.mtime_ns, ctime_ns=s.ctime_ns, is_dir=s.is_dir)
            for s in sources]


def tighten_wall(policy: Policy, timeout: float | None) -> Policy:
    """`timeout` can only shorten the policy's wall-clock limit, never extend it."""
    if timeout is None:
        return policy
    from sandbox.policy.units import parse_duration
    try:
        timeout = parse_duration(timeout)   # finite, > 0, in range (NaN compares false to all)
    except ValueError as exc:
        raise InputError(f"timeout: {exc}") from None
    wall = policy.limits.wall
    new = timeout if wall is None else min(wall, timeout)
    return policy.replace(limits=replace(policy.limits, wall=new))


@dataclass
class Prepared:
    run_id: str
    policy: Policy          # resolved
    plan: FsPlan
    paths: RunPaths
    env: dict[str, str]
    own_output: bool        # the launcher made the output dir (kept: it is the run's product)
    owner: int = -1         # the rundir's owner lock (tidy.own), until it is removed


def make_paths(run_id: str, workdir: str | None, output_dir: str | None
               ) -> tuple[RunPaths, bool, int]:
    """The run's directories; and its rundir's owner lock (tidy.own), held until the
    rundir is removed, so that a sweep can tell it from one of a launcher since killed."""
    own_output = output_dir is None
    if output_dir is None:
        output_dir = run_output_dir(run_id)
    else:
        output_dir = private_dir(output_dir, what="output directory")
    rundir = tempfile.mkdtemp(prefix=f"{tidy.PREFIX}{run_id[:12]}-")
    owner = -1
    try:
        owner = tidy.own(rundir)
        if workdir is None:
            workdir = os.path.join(rundir, "work")
            os.mkdir(workdir)
        tmp = os.path.join(rundir, "tmp")
        os.mkdir(tmp, 0o700)
    except BaseException:
        tidy.remove_now(rundir, owner)
        raise
    return RunPaths(rundir=rundir, workdir=os.path.abspath(workdir),
                    output=output_dir, tmp=tmp), own_output, owner


def _discard(paths: RunPaths, own_output: bool, owner: int = -1) -> None:
    """Undo `make_paths` for a run refused before it started: nothing is left behind
    (the output directory too, when the launcher made it)."""
    tidy.remove_now(paths.rundir, owner)
    if own_output:
        shutil.rmtree(paths.output, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(paths.output))   # runs/<run_id>, if now empty
        except OSError:
            pass


def build_env(policy: Policy, paths: RunPaths, run_id: str, namespaces: bool,
              extra: Mapping[str, str] | None, ipc_fd: int) -> dict[str, str]:
    """An environment scrubbed to an allowlist: nothing of the caller's leaks by default.

    HOME, USER, LOGNAME and SHELL name the sandbox's own user as the view's
    /etc/passwd does (sandbox.isolation.identity); TERM is the caller's or "dumb"."""
    from sandbox.isolation import identity
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "TMPDIR": "/tmp" if namespaces else paths.tmp}
    env.update(identity.environment(identity.identity(os.getuid(), os.getgid()), os.environ))
    for name in policy.env.keep:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(policy.env.set)
    env.update(extra or {})
    env.update({"SANDBOX_IPC_FD": str(ipc_fd), "SANDBOX_RUN_ID": run_id,
                "SANDBOX_OUTPUT": paths.output})
    for name, value in env.items():
        check_exec_string(name, value)
    return env


def check_exec_string(name: str, value: str) -> None:
    """An InputError naming `name` when "NAME=VALUE" is longer than execve accepts
    (MAX_ARG_STRLEN): said here, in one line, not as a wire bound or an E2BIG."""
    size = len(f"{name}={value}".encode("utf-8", "surrogatepass")) + 1
    if size > MAX_ARG_STRLEN:
        raise InputError(f"environment variable {name}: {size} bytes as NAME=VALUE, over the "
                         f"{MAX_ARG_STRLEN} that exec accepts per string (MAX_ARG_STRLEN); "
                         "pass a value this long in a file")


def runtime_rules(mode: str, code_paths: Sequence[str]) -> tuple[FsRule, ...]:
    """Read-only rules for code the child must import: the sandbox runtime and the
    caller's action code (`code_paths`, also put on the child's sys.path)."""
    if mode != "workflow":
        return ()
    rules = [FsRule(path=RUNTIME_DIR, read=True, rule="sandbox runtime")]
    for path in code_paths:
        if not os.path.isdir(path):
            raise InputError(f"code path {path!r} is not a directory")
        rules.append(FsRule(path=os.path.abspath(path), read=True, rule=f"action code: {path}"))
    return tuple(rules)


def refuse_hidden(workdir: str | None, output: str | None, hidden: Sequence[str]) -> None:
    """InputError when the workdir or output lies inside a hidden path."""
    real = [os.path.realpath(h) for h in hidden]
    for name, p in (("workdir", workdir), ("output", output)):
        if p is None:
            continue
        rp = os.path.realpath(p)
        for h in real:
            if rp == h or rp.startswith(h.rstrip("/") + "/"):
                raise InputError(f"the {name} {p} is inside {h}, which no sandbox may see "
                                 "(the audit store); choose another directory")


def hide(policy: Policy, paths: RunPaths, hidden: Sequence[str]) -> Policy:
    """`policy` with `hidden` (the trusted side's own state, e.g. the audit store)
    added to its deny rules, so no grant can put it in the sandbox's view: the
    planner masks it and the engine refuses it, whatever the policy says.

    A run whose workdir or output lies inside a hidden path is refused: it
    would be masked out of its own view."""
    if not hidden:
        return policy
    real = [os.path.realpath(h) for h in hidden]
    refuse_hidden(paths.workdir, paths.output, hidden)
    deny = tuple(policy.filesystem.deny) + tuple(h for h in real
                                                  if h not in policy.filesystem.deny)
    return policy.replace(filesystem=replace(policy.filesystem, deny=deny))


def prepare(run_id: str, policy: Policy, *, mode: str, workdir: str | None,
            output_dir: str | None, env: Mapping[str, str] | None, ipc_fd: int,
            code_paths: Sequence[str] = (), ceilings: Sequence[Ceiling] = (),
            cancel: Event | None = None, hidden: Sequence[str] = ()) -> Prepared:
    """`ceilings` (`sandbox.policy.confine.Ceiling`): policies this run may not
    exceed, checked on the resolved policy and on the plan (a nested spawn's
    parent, a before_spawn hook's input); a run with a ceiling that grants
    fresh roots is a sandbox's request, so its glob expansion is bounded and
    stops when `cancel` is set. `hidden`: paths no sandbox may see (`hide`)."""
    from sandbox.policy import build_plan, default_variables, resolve
    from sandbox.policy.confine import check_plan, confine, own_roots
    from sandbox.policy.planner import PlanBounds
    from sandbox.policy.model import memory_floor_problem
    made_workdir = workdir is None
    problem = memory_floor_problem(policy.limits.memory)   # a policy made in code
    if problem:
        raise InputError(f"limits.memory: {problem}")
    refuse_hidden(workdir, output_dir, hidden)     # before anything is made for the run
    paths, own_output, owner = make_paths(run_id, workdir, output_dir)
    try:
        variables = default_variables(paths.workdir, paths.output)
        resolved = resolve(policy, variables)
        own = own_roots([p for p, fresh in ((paths.workdir, made_workdir),
                                            (paths.output, own_output)) if fresh])
        untrusted = any(c.own_roots for c in ceilings)
        for c in ceilings:
            top = resolve(c.policy, variables)      # idempotent on a resolved parent policy
            resolved = confine(resolved, top, own=own if c.own_roots else (), what=c.what)
        resolved = hide(resolved, paths, hidden)
        cow = False
        if workdir_cow.wanted(resolved):
            resolved, cow = workdir_cow.grant(resolved, paths)
        plan = build_plan(resolved, bounds=PlanBounds(cancel=cancel) if untrusted else None)
        if cow:
            plan = workdir_cow.mark(plan, paths)
        for c in ceilings:
            check_plan(plan, resolve(c.policy, variables), own=own if c.own_roots else (),
                       what=c.what, live_parent=c.own_roots)
    except BaseException:
        _discard(paths, own_output, owner)
        raise
    try:
        extra = runtime_rules(mode, code_paths)
        run_env = build_env(resolved, paths, run_id, True, env, ipc_fd)
    except BaseException:
        _discard(paths, own_output, owner)
        raise
    plan = replace(plan, rules=tuple(plan.rules) + extra, output=paths.output)
    return Prepared(run_id=run_id, policy=resolved, plan=plan, paths=paths, env=run_env,
                    own_output=own_output, owner=owner)
