"""Path variables: `${WORKDIR}`, `${OUTPUT}`, `${HOME}`, `${PYTHON}`.

A policy file names places that differ per run (the work and output
directories) or per machine (where Python lives). The loader keeps them as
written so one parsed policy serves many runs; `resolve` substitutes them
right before a run, producing the concrete policy every kernel layer and the
engine consume.

`${PYTHON}` expands to SEVERAL paths: everything an interpreter of *this*
launcher needs to start (prefixes, stdlib, site-packages, the directory of
the executable and its real location, since a venv's `python` is a symlink
into /usr/bin), plus the directory of this `sandbox` package itself, so that
the in-sandbox bootstrap can import it even from an editable install.
A path using it yields one entry per value.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
import functools
import os
import re
import sys
import sysconfig
from typing import Iterable, Mapping, Sequence

from sandbox.errors import PolicyError
from sandbox.policy import globs
from sandbox.policy.model import FilesystemPolicy, Policy

KNOWN_VARIABLES = ("WORKDIR", "OUTPUT", "HOME", "PYTHON")

# `${NAME}`; NAME is anything up to the closing brace so that typos are reported, not kept literally.
VAR_RE = re.compile(r"\$\{([^}]*)\}")

Variables = Mapping[str, "str | Sequence[str]"]


def variables_in(path: str) -> list[str]:
    """The variable names a path uses, in order."""
    return VAR_RE.findall(path)


PATH_MAX = 4096   # characters of a policy path or pattern (Linux's PATH_MAX)


def check_path_syntax(path: str) -> str | None:
    """Why `path` is not an acceptable policy path, or None when it is.

    Acceptable: absolute (starts with "/") or starting with a known variable,
    every `${...}` a known variable, no NUL byte, no unterminated `${`, and
    no ``..`` segment: after a variable it climbs out of the place the
    variable names (``${OUTPUT}/../../etc``), which no comparison of the
    text can see; a policy names every place directly.
    """
    if not path:
        return "empty path"
    if "\0" in path:
        return "path contains a NUL byte"
    if len(path) > PATH_MAX:
        # it cannot name a path, and every pattern is compiled and compared (a nested
        # request's 200,000-character glob cost the launcher seconds of CPU)
        return f"{len(path)} characters, longer than any path Linux can name ({PATH_MAX})"
    if ".." in path.split("/"):
        return "'..' segment: name the directory directly (a '..' after a variable escapes it)"
    for name in variables_in(path):
        if name not in KNOWN_VARIABLES:
            return (f"unknown variable ${{{name}}} (known: "
                    + ", ".join(f"${{{v}}}" for v in KNOWN_VARIABLES) + ")")
    if "${" in VAR_RE.sub("", path):
        return "unterminated ${ in path"
    if not (path.startswith("/") or (path.startswith("${") and VAR_RE.match(path))):
        return "relative path: policy paths must be absolute or start with a variable such as ${WORKDIR}"
    return globs.problem(path) if globs.is_glob(path) else None


def python_paths() -> list[str]:
    return list(_python_paths())


@functools.lru_cache(maxsize=1)
def _python_paths() -> tuple[str, ...]:
    """Every directory a Python interpreter of this launcher reads to start.

    Deduplicated, order kept; both the path as configured and its real path
    are listed when they differ (a venv's bin/python -> /usr/bin/python3).
    """
    found: list[str] = []
    candidates: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths = sysconfig.get_paths()
    candidates += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    if sys.executable:
        candidates.append(os.path.dirname(sys.executable))
        candidates.append(os.path.dirname(os.path.realpath(sys.executable)))
    # This package itself (an editable install lives outside every prefix).
    candidates.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for c in candidates:
        if not c:
            continue
        for p in (os.path.normpath(os.path.abspath(c)), os.path.realpath(c)):
            if p not in found:
                found.append(p)
    return tuple(found)


def default_variables(workdir: str, output: str, home: str | None = None) -> dict[str, str | list[str]]:
    """The variables of a run: absolute WORKDIR/OUTPUT/HOME and the PYTHON paths."""
    if home is None:
        home = os.environ.get("HOME") or os.path.expanduser("~")
    return {"WORKDIR": os.path.abspath(workdir), "OUTPUT": os.path.abspath(output),
            "HOME": os.path.abspath(home), "PYTHON": python_paths()}


def expand(path: str, variables: Variables, *, key: str = "", file: str | None = None) -> list[str]:
    """All concrete paths `path` stands for, normalised. Raises PolicyError when a
    variable is missing from `variables` or the result is not absolute."""
    if ".." in path.split("/"):
        raise PolicyError(f"{path!r}: a '..' segment is not allowed in a policy path",
                          file=file, key=key)
    names = variables_in(path)
    if not names:
        values: list[str] = [path]
    else:
        choices: list[list[str]] = []
        for name in names:
            if name not in variables:
                raise PolicyError(f"variable ${{{name}}} has no value for this run", file=file, key=key)
            v = variables[name]
            vals = [v] if isinstance(v, str) else list(v)
            if not vals:
                raise PolicyError(f"variable ${{{name}}} expands to nothing", file=file, key=key)
            choices.append(vals)
        values = []
        for combo in itertools.product(*choices):
            it = iter(combo)
            values.append(VAR_RE.sub(lambda _m: next(it), path))
    out: dict[str, None] = {}   # ordered, and linear in the number of values
    for v in values:
        if not v.startswith("/"):
            raise PolicyError(f"{path!r} expands to the relative path {v!r}", file=file, key=key)
        n = os.path.normpath(v)
        if n.startswith("//"):
            n = "/" + n.lstrip("/")
        out[n] = None
    return list(out)


def _expand_all(paths: Iterable[str], variables: Variables, key: str, file: str | None) -> tuple[str, ...]:
    out: dict[str, None] = {}   # ordered, and linear in the number of rules
    for p in paths:
        for e in expand(p, variables, key=key, file=file):
            out[e] = None
    return tuple(out)


def real_path(path: str) -> str:
    """os.path.realpath, but let the kernel walk an existing path (open O_PATH, read
    the descriptor's link): a few system calls instead of an lstat per component,
    which made `resolve` ten times slower for a typical policy."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)


def with_real_paths(paths: tuple[str, ...], memo: dict[str, str] | None = None) -> tuple[str, ...]:
    """`paths` plus, after each one spelled through a symlink, its real spelling.

    The mount layer binds (and masks) a rule at its real path, so the kernel
    grants or hides the target of a symlinked rule (`read = ["/var/run"]`
    grants /run); the audit then sees the real path the kernel opened, and
    `explain` canonicalises too. Without the real spelling the engine would
    call those accesses "not granted" (or miss a deny). For a glob, its
    literal prefix is canonicalised. Real paths inside /proc are not added
    (`/proc/self` would name the launcher; the sandbox has its own /proc).
    """
    from sandbox.policy import globs
    out = dict.fromkeys(paths)   # ordered, and linear in the number of rules
    for p in paths:
        prefix = globs.static_prefix(p) if globs.is_glob(p) else p
        real = memo.get(prefix) if memo is not None else None
        if real is None:
            real = real_path(prefix)
            if memo is not None:
                memo[prefix] = real
        if real == prefix or real == "/proc" or real.startswith("/proc/"):
            continue
        alias = real + p[len(prefix):] if prefix != "/" else p
        out[alias] = None
    return tuple(out)


def resolve(policy: Policy, variables: Variables) -> Policy:
    """The policy with every variable substituted: what a run enforces.

    Rule paths spelled through a symlink also get their real spelling (see
    `with_real_paths`; this reads symlinks on the host, nothing else), and
    the credential stores under every home a grant reaches are denied
    unless ``allow_credentials`` names them (`sandbox.policy.credentials`).
    Idempotent on an already-resolved policy (it has no variables left).
    """
    fs = policy.filesystem
    src = policy.source
    memo: dict[str, str] = {}   # read and exec lists share most paths

    def concrete(paths: tuple[str, ...], key: str) -> tuple[str, ...]:
        return with_real_paths(_expand_all(paths, variables, key, src), memo)

    from sandbox.policy.credentials import denies
    read = concrete(fs.read, "filesystem.read")
    write = concrete(fs.write, "filesystem.write")
    exe = concrete(fs.exec, "filesystem.exec")
    deny = _expand_all(fs.deny, variables, "filesystem.deny", src)
    # Credential stores under every home a grant reaches (see sandbox.policy.credentials).
    deny = tuple(dict.fromkeys((*deny, *denies((*read, *write, *exe), variables,
                                             fs.allow_credentials))))
    new_fs = FilesystemPolicy(read=read, write=write, exec=exe,
                              deny=with_real_paths(deny, memo), tmp_size=fs.tmp_size,
                              allow_credentials=fs.allow_credentials, scratch_exec=fs.scratch_exec,
                              workdir=fs.workdir,
                              output_size=fs.output_size, output_inodes=fs.output_inodes)
    unix = concrete(policy.network.unix, "network.unix")
    return policy.replace(filesystem=new_fs, network=replace(policy.network, unix=unix))


def is_resolved(policy: Policy) -> bool:
    fs = policy.filesystem
    return not any("${" in p for p in (*fs.read, *fs.write, *fs.exec, *fs.deny))
