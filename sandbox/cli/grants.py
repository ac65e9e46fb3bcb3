"""Grants on the command line, composed onto the named policy.

    sandbox exec --read ~/data --write ./out --net loopback --memory 1G \\
                 --env TERM --env MODE=fast -- ./tool

As bwrap's --ro-bind/--bind and docker's -v/-e/--memory, but compiled into a
policy: the flags become a small TOML overlay that `extends` the named policy
(or the workflow's, else "default"), loaded by the same loader as a file, so
every value meets the same validation (a bad size, an unknown network mode,
a relative glob, a bad variable name) and `sandbox policy show` prints the
result. Lists add to the policy's (its denies still win); scalars replace.
Relative paths are made absolute from the current directory.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from sandbox.current_dir import current_dir
from sandbox.errors import InputError, PolicyError

# flag -> (policy table, key); limits keep the policy's spelling ("512MiB", "30s")
LIMIT_FLAGS = {"memory": "memory", "cpu": "cpu", "wall": "wall", "processes": "processes"}
PATH_FLAGS = ("read", "write", "exec")
GLOB_CHARS = frozenset("*?[")   # sandbox.policy.globs's (importing it loads the policy
                                # package, which a cold exec leaves for after its monitor)


def add_grant_options(p: argparse.ArgumentParser, *, env: bool = True) -> None:
    g = p.add_argument_group("grants (added to the policy; see sandbox policy show)")
    g.add_argument("--read", action="append", default=[], metavar="PATH",
                   help="may read PATH (a file, a directory's tree, or a glob); repeatable")
    g.add_argument("--write", action="append", default=[], metavar="PATH",
                   help="may read, create, change and delete under PATH; repeatable")
    g.add_argument("--exec", action="append", default=[], metavar="PATH", dest="exec_",
                   help="may execute PATH (implies read); repeatable")
    g.add_argument("--workdir-mode", choices=("direct", "copy-on-write"), metavar="MODE",
                   help="direct (the policy's rules; read-only unless --write) or "
                        "copy-on-write (writable, changes in OUTPUT/workdir.changes)")
    g.add_argument("--net", choices=("none", "loopback", "allowlist", "host"), metavar="MODE",
                   help="network: none, loopback, allowlist (through the monitor's proxy, "
                        "to --allow entries only) or host")
    g.add_argument("--allow", action="append", default=[], metavar="HOST:PORT",
                   help='with --net allowlist: a network allow entry, e.g. "pypi.org:443", '
                        '"*.pythonhosted.org:443", "127.0.0.1:8080"; repeatable')
    g.add_argument("--memory", metavar="SIZE", help='memory limit, e.g. "512MiB", "2G"')
    g.add_argument("--cpu", metavar="DURATION", help='CPU-time limit, e.g. "30s", "5m"')
    g.add_argument("--wall", metavar="DURATION",
                   help='wall-clock limit, e.g. "10s" (replaces the policy\'s; --timeout '
                        "can only shorten it)")
    g.add_argument("--processes", metavar="N", help="at most N processes")
    if env:
        g.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]",
                       help="set NAME in the sandbox, or pass the caller's NAME through "
                            "(repeatable); nothing else of the caller's environment passes "
                            "unless the policy keeps it")


def has_grants(args: argparse.Namespace) -> bool:
    return any(getattr(args, f, None) for f in ("read", "write", "exec_", "net", "allow",
                                                "memory", "cpu",
                                                "wall", "processes", "env", "workdir_mode"))


def _abs(path: str, cwd: str) -> str:
    if path.startswith("~"):
        # `--read=~/data`: no shell expands a tilde after "=", and the loader then
        # called the grant relative
        return os.path.expanduser(path)
    if path.startswith(("/", "${")):
        return path
    return os.path.normpath(os.path.join(cwd, path))


def _checked(kind: str, path: str, cwd: str, run: bool) -> str:
    """The grant's absolute path; InputError for an empty one (an unset shell variable:
    `--write "$OUT"` granted the whole current directory) or, for a run (`run`), one
    that does not exist (a grant binds what is there: it was dropped without a word,
    and the program met a read-only file system)."""
    if not path.strip():
        raise InputError(f"--{kind} {path!r}: an empty path (an unset shell variable?); "
                         "name the file or directory to grant")
    full = _abs(path, cwd)
    if not run or "${" in full or not GLOB_CHARS.isdisjoint(full):
        return full
    if not os.path.lexists(os.path.expanduser(full)):
        make = "mkdir -p" if kind != "read" and not os.path.splitext(full)[1] else "touch"
        raise InputError(f"--{kind} {path}: no such file or directory; a grant names what "
                         f"exists (create it first, e.g. {make} {full})")
    return full


def overlay(args: argparse.Namespace, base: str, cwd: str,
            run: bool = False) -> tuple[str, dict[str, str]]:
    """The TOML text of the grants on top of `base`, and TOML key -> flag (for errors)."""
    q = json.dumps     # a JSON string is a valid TOML basic string
    _utf8_only(args)
    flags: dict[str, str] = {}
    lines = [f"extends = [{q(base)}]"]
    fs = []
    for kind in PATH_FLAGS:
        paths = getattr(args, "exec_" if kind == "exec" else kind, None) or []
        if paths:
            fs.append(f"{kind} = [{', '.join(q(_checked(kind, p, cwd, run)) for p in paths)}]")
            flags[f"filesystem.{kind}"] = f"--{kind}"
    if getattr(args, "workdir_mode", None):
        fs.append(f"workdir = {q(args.workdir_mode)}")
        flags["filesystem.workdir"] = "--workdir-mode"
    if fs:
        lines += ["[filesystem]", *fs]
    net = []
    if args.net:
        net.append(f"mode = {q(args.net)}")
        flags["network.mode"] = "--net"
    if getattr(args, "allow", None):
        net.append(f"allow = [{', '.join(q(a) for a in args.allow)}]")
        flags["network.allow"] = "--allow"
    if net:
        lines += ["[network]", *net]
    limits = []
    for flag, key in LIMIT_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        text = value.strip()
        # a plain integer stays an integer (bytes, seconds, a count), as in a file
        literal = text if text.isdigit() else q(text)
        limits.append(f"{key} = {literal}")
        flags[f"limits.{key}"] = f"--{flag}"
    if limits:
        lines += ["[limits]", *limits]
    keep, set_ = [], {}
    for item in getattr(args, "env", None) or []:
        name, sep, value = item.partition("=")
        if sep:
            set_[name] = value
        else:
            keep.append(name)
        if not name:
            raise InputError(f"--env {item!r}: expected NAME or NAME=VALUE")
    if keep or set_:
        lines.append("[env]")
        if keep:
            lines.append(f"keep = [{', '.join(q(n) for n in keep)}]")
            flags["env.keep"] = "--env"
        if set_:
            lines.append("set = {" + ", ".join(f"{q(k)} = {q(v)}" for k, v in set_.items()) + "}")
            flags["env.set"] = "--env"
    return "\n".join(lines) + "\n", flags


def _utf8_only(args: argparse.Namespace) -> None:
    """A grant is policy text, and a policy holds Unicode text only: a path or value
    that is not UTF-8 (os.fsdecode's surrogates) is refused in one line naming its
    flag, not met later as 'invalid TOML: Escaped character is not a Unicode scalar
    value'. (Arguments and the working directory pass as bytes: they are no grant.)"""
    given = [(f"--{kind}", p) for kind in PATH_FLAGS
             for p in getattr(args, "exec_" if kind == "exec" else kind, None) or []]
    given += [("--env", item) for item in getattr(args, "env", None) or []]
    given += [("--allow", a) for a in getattr(args, "allow", None) or []]
    for flag, value in given:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            where = "" if flag in ("--env", "--allow") else \
                "; grant a parent directory whose name is UTF-8"
            raise InputError(f"{flag} {repr(os.fsencode(value))[1:]}: not UTF-8 text, which "
                             f"a policy cannot hold{where}") from None


def compose(args: argparse.Namespace, base: str | None, cwd: str | None = None,
            run: bool = False) -> Any:
    """`base` (a policy name or file; None = "default") with the command line's
    grants, as a Policy; or `base` itself when no grant was given. `run`: the grants
    are for a run now, so each path must exist (`sandbox policy show` may compose a
    policy for paths still to be made)."""
    if not has_grants(args):
        return base
    from sandbox.policy import load_policy
    from sandbox.policy.loader import parse_policy
    cwd = cwd or current_dir()
    ref = base or "default"
    if not ("/" not in ref and not ref.endswith(".toml")):
        ref = os.path.abspath(os.path.expanduser(ref))
    parent = load_policy(ref)               # its own errors keep its file and line
    text, flags = overlay(args, ref, cwd, run)
    try:
        policy = parse_policy(text, file="<command line>", base_dir=cwd)
    except PolicyError as exc:
        errors = getattr(exc, "errors", [exc])
        first = errors[0]
        flag = flags.get(first.key or "", None)
        if flag is None and first.key and first.key.startswith("env.set."):
            flag = "--env"
        raise InputError(f"{flag or 'grants'}: {first.key + ': ' if first.key else ''}"
                         f"{first.detail}") from None
    return policy.replace(name=f"{parent.name}+grants", source=f"{parent.source} + command line")
