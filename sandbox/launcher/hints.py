"""One line per way the sandbox made a run fail: the path, the rule, the policy key to change.

A program that fails under a sandbox usually says "Permission denied", "No
such file or directory", "Read-only file system" or "No space left on
device", and users blame their own code. `RunResult.hints` says when the
sandbox is why, from what the trusted side knows for certain:

- the audit's denied records (``[audit] files = "denied"`` or ``"all"``):
  each refused access with its path and rule (a refused exec deep in a build,
  a path missing from the view, a write to a read-only place), execs first,
  then writes, then reads; a refused read or exec of a path the host does
  not have either (a PATH search, a probe; the private /tmp excepted) is not
  the view's doing and gives none;
- the monitor's look at the private ``/tmp`` after the run
  (`ExitReport.tmp_full`): the tmpfs was full when the program ended; the
  same for the copy-on-write work directory's write layer
  (`ExitReport.workdir_full`: ``output_size`` / ``output_inodes``);
- the full private ``/dev/shm`` (`ExitReport.shm_full`), measured the same way;
- the syscalls refused with EPERM in errno mode (`RunResult.denied_syscalls`,
  counted by the monitor where the run has a seccomp listener): the syscall,
  the rule (``syscalls.deny`` or the profile) and the key to change, except
  the namespace and mount calls (`NAMESPACE_CALLS`), which no hint offers to
  allow;
- a memory limit applied as RLIMIT_AS (no memory cgroup; `limits_applied`) and a
  program killed by SIGTRAP, SIGSEGV, SIGABRT or SIGBUS, as runtimes that fail to
  reserve address space die (node: SIGTRAP): that the limit counts reservations;
- the seccomp violation (kill mode), the exec failure, the limits: their
  reasons and the CLI's hint already say what to change, so nothing is added;
- the refused connections of a ``mode = "allowlist"`` run (always recorded):
  the entry to add, or that the program bypassed the proxy;
- an unaudited run (``[audit] files = "none"``): only what the monitor measured
  (the full ``/tmp``); file refusals are not known, and nothing is guessed;
- a file of the host's ``/tmp`` or ``/dev/shm`` that the caller named on the
  command line (`for_arguments`: ``bash /tmp/x.sh``, ``cat /tmp/data.csv``):
  the sandbox's are its own and start empty, and the audit records the open as
  allowed (the private area), so no refusal says it; the host is consulted for
  the caller's own arguments only, as `exec_failure` does for the program;
- a work directory inside a git work tree the view does not show
  (`for_enclosing_repository`): git stops at the work directory ("not a git
  repository") and pytest or a build misses the project's configuration; the
  ``--read`` of the tree's top (never ``/`` or the caller's home, or a tree
  above it) and, where the work directory is a mount of its own
  (copy-on-write), the variable that lets git cross into it;
- the caller's module search paths (`SEARCH_PATHS`: PYTHONPATH, NODE_PATH, ...)
  that did not reach the program (`for_dropped_env`): its environment is built
  from scratch, so `PYTHONPATH=src sandbox exec -- python3 -m app` meets
  ModuleNotFoundError; the names and ``--env NAME``, never the values;
- a refused look at ``DIR/NAME`` for a DIR of the program's PATH
  (`for_path_search`): none when a later PATH entry the view shows has NAME
  (the search went on: pyenv's shims or ~/.local/bin hidden, /usr/bin's
  python3 run), else NAME with the grant that runs it (``--exec DIR``).

A hint never widens more than the refusal asks: no read of all of ``/`` (a
top-level name is granted itself), no write to the sandbox's own areas
(`OWN_AREAS`), no deny rule dropped for a path under it that was only looked at.

Hints are made only for runs that did not succeed (a run that went on past a
refused probe is not failing because of it), at most `MAX_HINTS` of them,
and never from the program's own output: what a hint names was decided by
the policy engine or measured by the monitor. Paths the program chose are
rendered printable by whoever prints them (`sandbox.printable`).
"""
from __future__ import annotations

import os
import signal
from typing import Any, Mapping

from sandbox.policy.model import Policy

MAX_HINTS = 3
# rules of what the sandbox provides itself, never granted by a policy's write rule: a
# write there is no hint (`--write /sys/fs/cgroup/memory` would not be the fix)
OWN_AREAS = ("sandbox: /proc", "sandbox: /sys/fs/cgroup", "sandbox: /dev")
# a refused exec or write explains a failure more often than a refused look
_PRIORITY = {"exec": 0, "write": 1, "create": 1, "delete": 1, "read": 2}


# the sandbox's own areas a policy may grant parts of, never the whole (policy.loader)
PRIVATE_AREAS = ("/tmp", "/dev/shm")
# the caller's arguments looked at for `for_arguments`: bounded (an xargs-sized argv)
MAX_ARGUMENTS, MAX_ARGUMENT = 256, 4096


def _dir(path: str) -> str:
    return os.path.dirname(path.rstrip("/")) or "/"


def grant_target(path: str) -> str:
    """What a hint offers to grant for `path`: its directory, unless that is the root or a
    private area that cannot be granted whole (``--read /tmp`` is refused): then the path."""
    where = _dir(path)
    return path if where == "/" or where in PRIVATE_AREAS else where


def _q(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def for_denied(op: str, path: str, rule: str, workdir: str, policy: Policy) -> str:
    """The hint of one denied record."""
    where = grant_target(path)   # a top-level name: never a grant of the whole root
    if rule.startswith("filesystem.deny"):
        return (f"{op} of {path} was refused by {rule} (deny beats every allow): "
                "remove that deny rule from the policy if the program needs it")
    if op == "exec":
        if rule == "private /tmp":
            return (f"exec of {path} was refused: the private /tmp is not executable "
                    "under this policy (set [filesystem] scratch_exec = true)")
        return (f"exec of {path} was refused ({rule}): add exec = [{_q(where)}] to "
                f"[filesystem] (or --exec {where})")
    if op in ("write", "create", "delete"):
        if _inside(path, workdir) and policy.filesystem.workdir != "copy-on-write":
            return (f"{op} of {path} was refused: the work directory is read-only under "
                    f"this policy (set [filesystem] workdir = \"copy-on-write\" or "
                    f"--workdir-mode copy-on-write; or write = [{_q(workdir)}] to change "
                    "the host's)")
        return (f"{op} of {path} was refused ({rule}): add write = [{_q(where)}] to "
                f"[filesystem] (or --write {where})")
    return (f"{path} is not in the sandbox's view ({rule}): add read = [{_q(where)}] to "
            f"[filesystem] (or --read {where})")


def for_connection(target: str, rule: str, op: str = "connect") -> str | None:
    """The hint of a refused connection, or (`op` "bind") of a server's refused bind
    under mode "none" (any port: 0 is a server's ask for any port): mode "none" (the
    monitor), or "allowlist"
    (the monitor, or its proxy: sandbox/netproxy). None for port 0: no connection
    was asked for, only a route (getaddrinfo sorts its answers by a UDP connect to
    each address, port 0; git's identity probe looked like a network need)."""
    if op == "bind" and rule.startswith("network.none"):
        return (f"a bind of {target} was refused (EACCES): the sandbox has no network, not "
                'even a loopback to listen on (network mode "none"; --net loopback gives it '
                "its own loopback)")
    if target.endswith(":0"):
        return None
    if rule.startswith("network.none"):
        return (f"a connection to {target} was refused: the sandbox has no network "
                '(network mode "none"; --net loopback gives it its own loopback, --net '
                "allowlist --allow HOST:PORT a way out through the monitor's proxy)")
    if rule.startswith("network.allowlist: a direct connection"):
        return (f"a direct connection to {target} was refused: only the proxy at "
                "127.0.0.1:3128 leads out (the program ignored HTTP_PROXY/HTTPS_PROXY/"
                "ALL_PROXY; point it at http://127.0.0.1:3128)")
    if rule.startswith("no allow entry for "):
        entry = rule[len("no allow entry for "):]
        return (f"the proxy refused {target} ({rule}): add allow = [{_q(entry)}] to "
                f"[network] (or --allow {entry})")
    if rule.startswith("deny_private: "):
        addr = rule[len("deny_private: "):].split(" ", 1)[0]
        port = target.rpartition(":")[2]
        literal = f"[{addr}]" if ":" in addr else addr
        return (f"the proxy refused {target}: {rule.split(' (', 1)[0][len('deny_private: '):]}; "
                f"add allow = [{_q(f'{literal}:{port}')}] to [network] to reach that address")
    if rule.startswith("proxy: "):
        return f"the proxy refused {target}: {rule[len('proxy: '):]}"
    return None


def for_arguments(argv: list[str], policy: Policy) -> list[tuple[str, str]]:
    """(path, hint) for each absolute path among the caller's arguments (``NAME=/path``
    too) that the host has in its /tmp or /dev/shm where the view shows the sandbox's own,
    which starts empty: the program's "No such file" is the view's doing."""
    from sandbox.policy import decide
    out: list[tuple[str, str]] = []
    for arg in argv[1:MAX_ARGUMENTS]:
        if len(arg) > MAX_ARGUMENT:
            continue
        value = arg.split("=", 1)[1] if "=" in arg and not arg.startswith("/") else arg
        if not value.startswith(PRIVATE_AREAS):
            continue
        path = os.path.normpath(value)
        if not path.startswith(tuple(a + "/" for a in PRIVATE_AREAS)) or \
                not os.path.lexists(path):
            continue
        verdict = decide(policy, "read", path)
        if not verdict.rule.startswith("private "):
            continue    # granted from the host (the work directory, a read rule)
        area, where = verdict.rule.split(" ", 1)[1], grant_target(path)
        out.append((path, f"{path} is in the host's {area}, which the sandbox does not see: "
                          f"its {area} is its own and starts empty (add read = [{_q(where)}] "
                          f"to [filesystem], or --read {where}; or put it in the work "
                          "directory)"))
    return out


# variables that only tell a runtime or a linker where to find code: a caller who set one
# most likely ran the program with it (values are never shown: names only)
SEARCH_PATHS = ("PYTHONPATH", "NODE_PATH", "PERL5LIB", "PERLLIB", "RUBYLIB", "CLASSPATH",
                "GOPATH", "LD_LIBRARY_PATH")


def for_dropped_env(caller: Mapping[str, str], program: Mapping[str, str]) -> str | None:
    """The hint of the caller's search-path variables the program's environment lacks."""
    names = [n for n in SEARCH_PATHS if caller.get(n) and n not in program]
    if not names:
        return None
    flags = " ".join(f"--env {n}" for n in names)
    return (f"{', '.join(names)}, set in your environment, did not reach the program (its "
            "environment is built from scratch: [env] keep lists what passes): if it needs "
            f"{'it' if len(names) == 1 else 'them'}, {flags}")


def for_path_search(path: str, rule: str, search: list[str], policy: Policy) -> str | None:
    """For a refused look at `path` in a directory of the program's PATH (`search`): ""
    when a later entry the view shows has the same name (the search went on there, so
    the refusal is not why the run failed), else the hint naming the grant that runs it;
    None when `path` is not a PATH search's."""
    from sandbox.policy import decide
    where, name = os.path.split(path)
    if not name or where not in search or rule.startswith("filesystem.deny"):
        return None
    for later in search[search.index(where) + 1:]:
        found = os.path.join(later, name)
        if later.startswith("/") and os.path.isfile(found) and \
                decide(policy, "exec", found).allowed:
            return ""
    return (f"{path}, on the program's PATH, is not in the sandbox's view ({rule}): "
            f"add read = [{_q(where)}] and exec = [{_q(where)}] to [filesystem] "
            f"(or --exec {where})")


# how far up from the work directory a repository is looked for
MAX_DEPTH = 64


def for_enclosing_repository(workdir: str, policy: Policy) -> str | None:
    """The hint of a work directory strictly inside a git work tree whose top the view
    does not show (the caller's own directories, looked at after the run)."""
    from sandbox.policy import decide
    home = os.path.realpath(os.path.expanduser("~"))
    here = os.path.normpath(workdir)
    for _ in range(MAX_DEPTH):
        up = _dir(here)
        if up == here:
            return None
        here = up
        if os.path.lexists(os.path.join(here, ".git")):
            break
    else:
        return None
    seen = decide(policy, "read", os.path.join(here, ".git"))
    if here == "/" or _inside(home, here) or (seen.allowed and not seen.rule.startswith(
            "private ")):   # the sandbox's own /tmp is not the host's tree
        return None
    cross = (" and --env GIT_DISCOVERY_ACROSS_FILESYSTEM=1 (the copy-on-write work directory "
             "is a mount of its own)" if policy.filesystem.workdir == "copy-on-write" else "")
    return (f"the work directory is inside the git work tree {here}, which the view does not "
            "show (git stops at the work directory, \"not a git repository\"; pytest and "
            "builds miss the project's configuration): if the program needs it, add read = "
            f"[{_q(here)}] to [filesystem] (or --read {here}){cross}")


# What a sandbox never does itself: allowing these would hand the program the kernel's
# namespace and mount code (the nested-userns attack surface), so no hint says "allow it"
NAMESPACE_CALLS = frozenset({
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
    "fsmount", "move_mount", "open_tree", "open_tree_attr", "fspick", "mount_setattr"})


def for_syscall(name: str, count: int, policy: Policy) -> str:
    """The hint of a syscall refused in errno mode."""
    times = "once" if count == 1 else f"{count} times"
    if name in NAMESPACE_CALLS and name not in policy.syscalls.deny:
        return (f"syscall {name} was refused with EPERM {times}: a sandbox makes no "
                "namespaces or mounts of its own (a sandbox inside one is asked of the "
                "launcher: ctx.spawn in a workflow action, docs/workflows.md); allowing it "
                "would hand the program the kernel's namespace code")
    if name in policy.syscalls.deny:
        return (f"syscall {name} was refused with EPERM {times} (syscalls.deny): remove it "
                "from [syscalls] deny if the program needs it")
    return (f"syscall {name} was refused with EPERM {times} (syscalls.profile = "
            f"\"{policy.syscalls.profile}\"): add it to [syscalls] allow = [\"{name}\"] "
            "if the program needs it")


def make(result: Any, policy: Policy, *, tmp_full: bool, workdir: str,
         exec_failed: bool = False, workdir_full: bool = False,
         shm_full: bool = False, argv: list[str] | None = None,
         env: Mapping[str, str] | None = None) -> list[str]:
    """The hints of a finished run (see the module doc). A program that could not be
    started at all already has its one line (`exec_failure.describe`). `argv`: the
    command the caller asked to run (exec mode), for `for_arguments`; `env`: the
    program's environment, for `for_dropped_env` (the caller's is this process's)."""
    if str(result.status) == "ok" or exec_failed:
        return []
    out: list[str] = []
    if tmp_full:
        size = policy.filesystem.tmp_size
        out.append(f"the private /tmp was full when the program ended ({size // (1 << 20)} MiB; "
                   "raise [filesystem] tmp_size)")
    if shm_full:
        from sandbox.isolation.mounts import SHM_MAX
        size = max(4096, min(policy.filesystem.tmp_size, SHM_MAX))
        out.append(f"the private /dev/shm was full when the program ended ({size // (1 << 20)} "
                   f"MiB: [filesystem] tmp_size, at most {SHM_MAX // (1 << 20)} MiB; put "
                   "large shared files in /tmp)")
    for name, count in sorted(getattr(result, "denied_syscalls", {}).items(),
                              key=lambda kv: (-kv[1], kv[0])):
        out.append(for_syscall(name, count, policy))
    if policy.filesystem.workdir == "copy-on-write" and (
            getattr(result, "signal", None) == signal.SIGXFSZ or (
                str(result.status) == "limit_exceeded" and result.reason == "file_size")):
        fsize = policy.limits.file_size
        here = f" ({fsize // (1 << 20)} MiB here)" if fsize else ""
        out.append(f"under copy-on-write, a write, chmod or touch of a work-directory file "
                   f"copies it whole into the run's layer, within [limits] file_size{here} "
                   "and [filesystem] output_size: raise them, or --write its directory to "
                   "change the host's file in place")
    if (getattr(result, "limits_applied", {}) or {}).get("memory") == "rlimit" and (
            getattr(result, "signal", None) in (signal.SIGTRAP, signal.SIGSEGV, signal.SIGABRT,
                                                signal.SIGBUS)):   # how runtimes die of it
        mem = policy.limits.memory
        here = f" of {mem // (1 << 20)} MiB" if mem else ""
        out.append(f"memory is limited here as address space (RLIMIT_AS{here}: no memory "
                   "cgroup this user may write), which counts what a program reserves, not "
                   "what it uses: runtimes that reserve much (node, java, Go) fail below "
                   "their need; raise --memory, or cap the runtime's own heap")
    if workdir_full:
        fs = policy.filesystem
        out.append(f"the copy-on-write work directory's write layer was full when the program "
                   f"ended ({fs.output_size // (1 << 20)} MiB, {fs.output_inodes} files; raise "
                   "[filesystem] output_size or output_inodes)")
    seen: set[tuple[str, str]] = set()
    found: list[tuple[int, int, str]] = []
    search = [os.path.normpath(d) for d in (env or {}).get("PATH", "").split(":") if d]
    for n, rec in enumerate(result.denied):
        op, path, rule = str(rec.get("operation", "")), str(rec.get("path", "")), \
            str(rec.get("rule", ""))
        if op in ("connect", "bind") and not path.startswith("/"):
            text = for_connection(path, rule, op) if ("net", path) not in seen else None
            if text is not None:
                seen.add(("net", path))
                found.append((_PRIORITY["write"], n, text))
            continue
        kind = op if op in ("exec", "write", "create", "delete") else "read"
        # a write, create and delete in one directory ask for the same grant: one line
        key = ("write" if _PRIORITY[kind] == _PRIORITY["write"] else kind, _dir(path))
        if not path or key in seen:
            continue
        if kind != "read" and rule.startswith(OWN_AREAS):
            continue    # the sandbox's own areas (its /proc, /dev, cgroups): no grant fits
        if op == "metadata" and rule.startswith("filesystem.deny"):
            continue    # a look at a denied path (a probe, a walk) is no reason to drop the deny
        if kind in ("read", "exec") and not rule.startswith("filesystem.deny") and \
                rule != "private /tmp" and not os.path.lexists(path):
            continue    # missing everywhere (a PATH search, a probe): not the view's doing
        searched = for_path_search(path, rule, search, policy) if kind != "write" else None
        if searched == "":
            continue    # the PATH search went on to one the view shows
        seen.add(key)
        found.append((_PRIORITY[kind], n, searched or for_denied(op, path, rule, workdir,
                                                                 policy)))
    for n, (path, text) in enumerate(for_arguments(argv or [], policy), len(result.denied)):
        if ("read", _dir(path)) not in seen:
            seen.add(("read", _dir(path)))
            found.append((_PRIORITY["read"], n, text))
    repo = for_enclosing_repository(workdir, policy) if argv is not None else None
    if repo is not None:
        found.append((_PRIORITY["read"] + 1, 0, repo))
    dropped = for_dropped_env(os.environ, env) if env is not None else None
    if dropped is not None:
        found.append((_PRIORITY["read"] + 1, 1, dropped))
    out += [text for _p, _n, text in sorted(found)]
    return out[:MAX_HINTS]
