"""Is one policy at most as permissive as another? (`is_narrower_or_equal`)

Used wherever a policy may be *tightened but never loosened*: a `before_spawn`
hook rewriting a run's policy, and a nested spawn asking for a policy for its
sub-workflow (which must be narrower than or equal to its parent's). The
answer is conservative: when in doubt, "not narrower", with the reason.

Compare two policies in the same form: both raw (variables such as
``${OUTPUT}`` kept, compared as literal text) or both resolved. A raw path
and a resolved path naming the same place are *not* recognised as equal.
Raw text says nothing about symlinks: where it matters (a nested spawn, a
before_spawn hook) the launcher compares again on the *resolved* policies,
real paths included (`sandbox.policy.confine`), and that answer decides.
A path with a ``..`` segment is never narrower: ``${OUTPUT}/../../etc``
starts with ``${OUTPUT}`` as text and names /etc once expanded.

Rules, each must hold for `a` to be narrower than or equal to `b`:

- filesystem: every path of ``a.read``/``a.write``/``a.exec`` is covered by
  rules of `b` granting at least the same rights (``exec`` = read+exec,
  ``write`` = read+write+create+delete; a rule covers its subtree; a glob of
  `a` is covered by the identical glob in `b` or by a rule of `b` covering
  the glob's literal prefix; a path in a sandbox area, /tmp or /dev, is
  covered only by rules rooted strictly inside that area, as in the engine,
  and a glob whose literal prefix is "/" only by the identical glob, since
  it may match inside an area); paths under `own` roots (a nested run's
  fresh WORKDIR and OUTPUT) need no cover; every ``b.deny`` is covered by a deny of `a`
  (deny superset); ``tmp_size`` not larger; ``best_effort`` only if `b` has it;
  ``workdir``: direct < copy-on-write (a writable work directory, even an
  overlay whose upper layer costs the run's memory, is looser than the rules'
  read-only one); ``scratch_exec`` only if `b` has it.
- network: none < loopback < allowlist < host; two allowlists: every
  ``allow`` entry of `a` covered by one entry of `b` (`netproxy.lattice`),
  ``deny_private`` kept if `b` has it, ``dns`` only if `b` has it.
- limits: each ``a`` limit <= ``b``'s; ``None`` means unlimited, so `a` may
  be limited where `b` is not, never the reverse.
- syscalls: profile strict <= default; ``a.allow`` a subset of ``b.allow``;
  ``a.deny`` a superset of ``b.deny``; ``on_violation`` kill is tighter than
  errno (a = errno only if b = errno).
- audit: not weaker: none < denied < all (more auditing is "narrower"); a record budget
  no larger (a bigger one costs the host more store).
- env: ``a.env.keep`` a subset of ``b.env.keep`` (host variables passed in);
  ``env.set`` is free (values written in the policy itself, no host secret).
"""
from __future__ import annotations

from typing import Iterable

from sandbox.policy import globs
from sandbox.policy.engine import area_of, normalize
from sandbox.policy.model import Policy

NETWORK_ORDER = {"none": 0, "loopback": 1, "allowlist": 2, "host": 3}
PROFILE_ORDER = {"strict": 0, "default": 1}
VIOLATION_ORDER = {"kill": 0, "errno": 1}
AUDIT_ORDER = {"all": 0, "denied": 1, "none": 2}   # more auditing = narrower
WORKDIR_ORDER = {"direct": 0, "copy-on-write": 1}     # a writable work directory is looser
RIGHTS = {"read": frozenset({"read"}), "exec": frozenset({"read", "exec"}),
          "write": frozenset({"read", "write", "create", "delete"})}
LIMIT_KEYS = ("cpu", "wall", "memory", "file_size", "processes", "open_files", "monitor_cpu")


def has_dotdot(path: str) -> bool:
    """Does `path` have a ``..`` segment (which text comparison cannot judge)?"""
    return ".." in path.split("/")


def _norm(path: str) -> str:
    return normalize(path) if path.startswith("/") else path.rstrip("/") or path


def _covers(rule: str, path: str) -> bool:
    """Does the rule `rule` (literal or glob) cover `path` (literal or glob)?"""
    if has_dotdot(rule) or has_dotdot(path):
        return False
    rule, path = _norm(rule), _norm(path)
    if rule == path:
        return True
    if globs.is_glob(path):
        path = globs.static_prefix(path)      # the glob lives somewhere under this prefix
        if path == "/":
            return False                      # "/t*/x" may reach /tmp/x: only itself covers it
    area = area_of(path)
    if area is not None:
        # In /tmp and /dev only rules rooted strictly inside the area grant host paths
        # (the engine's rule); "/" or a glob matching from outside does not.
        anchor = globs.static_prefix(rule) if globs.is_glob(rule) else rule
        if not anchor.startswith(area + "/"):
            return False
    if rule == "/":
        return path.startswith("/")
    if globs.is_glob(rule):
        return globs.compile_rule(rule).fullmatch(path) is not None
    return path == rule or path.startswith(rule + "/")


def _owned(path: str, own: tuple[str, ...]) -> bool:
    """Is `path` (literal or glob) inside one of the `own` roots?"""
    if has_dotdot(path):
        return False
    p = _norm(globs.static_prefix(path) if globs.is_glob(path) else path)
    return any(p == r or p.startswith(r + "/") for r in own)


def _rights_at(policy: Policy, path: str) -> set[str]:
    fs = policy.filesystem
    got: set[str] = set()
    for kind in ("read", "exec", "write"):
        if any(_covers(rule, path) for rule in getattr(fs, kind)):
            got |= RIGHTS[kind]
    return got


def _order(name: str, order: dict[str, int], va: object, vb: object, why: list[str]) -> None:
    if va not in order or vb not in order:
        why.append(f"{name}: unknown value {va!r} or {vb!r}")
    elif order[va] > order[vb]:
        why.append(f"{name}: {va!r} is looser than {vb!r}")


def _subset(name: str, a: Iterable[str], b: Iterable[str], why: list[str]) -> None:
    extra = sorted(set(a) - set(b))
    if extra:
        why.append(f"{name}: adds {', '.join(extra)}")


def differences(a: Policy, b: Policy, *, own: Iterable[str] = ()) -> list[str]:
    """Every way in which `a` is looser than `b` (empty: a is narrower or equal).

    `own`: absolute roots that belong to `a`'s run alone (fresh, empty
    directories the launcher made for it); rules inside them need no cover."""
    why: list[str] = []
    owned = tuple(_norm(r) for r in own)
    fa, fb = a.filesystem, b.filesystem
    for kind in ("read", "exec", "write", "deny"):
        for path in getattr(fa, kind):
            if has_dotdot(path):
                why.append(f"filesystem.{kind}: {path} has a '..' segment")
    for kind in ("read", "exec", "write"):
        for path in getattr(fa, kind):
            if has_dotdot(path):
                continue
            if owned and _owned(path, owned):
                continue
            missing = RIGHTS[kind] - _rights_at(b, path)
            if missing:
                why.append(f"filesystem.{kind}: {path} needs {'+'.join(sorted(missing))}, "
                           "which the other policy does not grant there")
    for path in fb.deny:
        if not any(_covers(d, path) for d in fa.deny):
            why.append(f"filesystem.deny: drops {path}")
    if "*" not in fb.allow_credentials:
        _subset("filesystem.allow_credentials", fa.allow_credentials, fb.allow_credentials, why)
    for key in ("tmp_size", "output_size", "output_inodes"):
        if getattr(fa, key) > getattr(fb, key):
            why.append(f"filesystem.{key}: {getattr(fa, key)} > {getattr(fb, key)}")
    if fa.scratch_exec and not fb.scratch_exec:
        why.append("filesystem.scratch_exec: the private /tmp is executable, "
                   "the other policy's is not")
    _order("filesystem.workdir", WORKDIR_ORDER, fa.workdir, fb.workdir, why)
    if a.best_effort and not b.best_effort:
        why.append("best_effort: may skip layers the other policy requires")
    _order("network.mode", NETWORK_ORDER, a.network.mode, b.network.mode, why)
    if b.network.mode != "host":
        _subset("network.unix", a.network.unix, b.network.unix, why)
    if a.network.mode == "allowlist" and b.network.mode == "allowlist":
        _allowlist(a.network, b.network, why)
    for key in LIMIT_KEYS:
        la, lb = getattr(a.limits, key), getattr(b.limits, key)
        if lb is None:
            continue
        if la is None:
            why.append(f"limits.{key}: unlimited, the other policy has {lb}")
        elif not isinstance(la, (int, float)) or isinstance(la, bool) or la > lb:
            why.append(f"limits.{key}: {la!r} > {lb!r}")
    sa, sb = a.syscalls, b.syscalls
    _order("syscalls.profile", PROFILE_ORDER, sa.profile, sb.profile, why)
    _subset("syscalls.allow", sa.allow, sb.allow, why)
    dropped = sorted(set(sb.deny) - set(sa.deny))
    if dropped:
        why.append(f"syscalls.deny: drops {', '.join(dropped)}")
    _order("syscalls.on_violation", VIOLATION_ORDER, sa.on_violation, sb.on_violation, why)
    _order("audit.files", AUDIT_ORDER, a.audit.files, b.audit.files, why)
    if a.audit.records > b.audit.records:   # a bigger budget costs the host more store
        why.append(f"audit.records: {a.audit.records} > {b.audit.records}")
    _subset("env.keep", a.env.keep, b.env.keep, why)
    return why


def _allowlist(na: object, nb: object, why: list[str]) -> None:
    from sandbox.netproxy.lattice import uncovered
    try:
        wider = uncovered(getattr(na, "allow"), getattr(nb, "allow"))
    except ValueError as exc:       # an entry that does not parse is never narrower
        why.append(f"network.allow: {exc}")
        return
    for entry in wider:
        why.append(f"network.allow: {entry} is not within the other policy's allowlist")
    if getattr(nb, "deny_private") and not getattr(na, "deny_private"):
        why.append("network.deny_private: false, the other policy refuses private addresses")
    if getattr(na, "dns") and not getattr(nb, "dns"):
        why.append("network.dns: true, the other policy has no resolver stub")


def is_narrower_or_equal(a: Policy, b: Policy) -> tuple[bool, str]:
    """(True, "") when `a` grants nothing `b` does not; else (False, every reason, "; "-joined)."""
    why = differences(a, b)
    return (not why, "; ".join(why))
