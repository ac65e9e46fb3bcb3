"""`build_plan`: a resolved policy's filesystem rules made concrete on this host.

This is the ONE place of the policy package that touches the filesystem: it
expands globs by listing directories, and drops rule paths that do not exist
(they cannot be bound into the view). Everything else is delegated to the
engine, so the plan and `decide` cannot disagree:

- each concrete rule path gets exactly the rights `decide` gives it (read,
  write, exec), which folds in rights inherited from enclosing rules: with
  `write = ["/data"]` and `read = ["/data/ro"]`, /data/ro is writable through
  /data, so its bind must be writable too;
- rule paths that are denied (a deny on them or an ancestor) are dropped;
- a rule that adds nothing to the nearest enclosing rule is dropped;
- a glob match with a symlink where the glob matched gets only the rights a
  path rule gives the link's target itself: the mount layer binds, and
  Landlock grants, what a path resolves to, and a name the policy's author
  never wrote may have been planted by anyone who could write there (an
  earlier run granted write on the work directory);
- `masks` are the existing denied paths inside some kept rule: the mount
  layer hides them, as Landlock cannot carve a hole in a granted tree;
- /tmp, /proc and /dev themselves are never rules (the sandbox provides
  them); host paths strictly inside /tmp or /dev are (bound over them).

Denied paths that do not exist when the plan is built (or only match a glob
later) cannot be masked; inside a writable tree the kernel then cannot stop
their creation, and only the audit (which calls `decide`) reports them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from threading import Event

from sandbox.errors import PolicyError
from sandbox.policy import globs
from sandbox.policy.engine import Engine, Verdict, area_of, engine_for, normalize
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule
from sandbox.policy.variables import real_path

MAX_GLOB_ENTRIES = 200_000       # directory entries one glob may visit before it is refused
_NO_WALK = ("/proc", "/sys", "/dev")   # `**` never descends into these


@dataclass(frozen=True)
class PlanBounds:
    """Bounds on the work of one `build_plan`, for plans an untrusted party asked
    for (a nested spawn's): the launcher expands globs on the host, so the
    request must not be able to make it list directories for minutes, nor go
    on after the run that asked has ended.

    `globs`: glob rules per plan; `entries`: directory entries visited by all
    globs together; `seconds`: time spent expanding; `cancel`: stop as soon as
    it is set (checked per directory listed).
    """
    globs: int = 64
    entries: int = 50_000
    seconds: float = 2.0
    cancel: Event | None = None


class _Budget:
    def __init__(self, pattern: str, key: str, limit: int,
                 bounds: PlanBounds | None = None, deadline: float | None = None) -> None:
        self.pattern, self.key, self.left, self.limit = pattern, key, limit, limit
        self.bounds, self.deadline = bounds, deadline

    def spend(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise PolicyError(f"glob {self.pattern!r} visits more than {self.limit} "
                              "directory entries on this host; narrow it", key=self.key)
        if self.bounds is not None:
            if self.bounds.cancel is not None and self.bounds.cancel.is_set():
                raise PolicyError("glob expansion cancelled: the run that asked for this "
                                  "plan has ended", key=self.key)
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise PolicyError(f"glob expansion took more than {self.bounds.seconds:g}s; "
                                  "narrow the globs", key=self.key)


_LISTINGS: dict[str, tuple[int, int, list[str]]] = {}


def _listdir(path: str, budget: _Budget) -> list[str]:
    """Sorted entries of `path`, cached while the directory's mtime and inode are
    unchanged (adding, removing or renaming an entry changes the mtime), so a
    launcher expanding the same globs for every run lists each directory once."""
    try:
        st = os.stat(path)
        hit = _LISTINGS.get(path)
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_ino:
            names = hit[2]
        else:
            names = sorted(os.listdir(path))
            if len(_LISTINGS) > 4096:
                _LISTINGS.clear()
            _LISTINGS[path] = (st.st_mtime_ns, st.st_ino, names)
    except OSError:
        return []
    budget.spend(len(names))
    return names


def _descendant_dirs(base: str, budget: _Budget) -> list[str]:
    """base and every directory below it, not following symlinks."""
    out, stack = [], [base]
    while stack:
        d = stack.pop()
        out.append(d)
        if d in _NO_WALK:
            continue
        for name in reversed(_listdir(d, budget)):
            child = os.path.join(d, name)
            if os.path.isdir(child) and not os.path.islink(child):
                stack.append(child)
    return out


def expand_glob(pattern: str, *, key: str = "filesystem",
                limit: int = MAX_GLOB_ENTRIES, _budget: "_Budget | None" = None) -> list[str]:
    """Existing host paths the glob names (not their subtrees), sorted."""
    budget = _budget or _Budget(pattern, key, limit)
    budget.pattern, budget.key = pattern, key
    budget.spend(0)
    parts = pattern.strip("/").split("/")
    if any("**" in s and s != "**" for s in parts):
        # `**` inside a segment crosses `/`: walk everything below the literal prefix.
        exact = globs.compile_exact(pattern).fullmatch
        start = globs.static_prefix(pattern)
        found = []
        for d in _descendant_dirs(start, budget):
            for name in _listdir(d, budget):
                child = os.path.join(d, name)
                if exact(child):
                    found.append(child)
        return sorted(set(found))
    bases = ["/"]
    for i, seg in enumerate(parts):
        last = i == len(parts) - 1
        nxt: list[str] = []
        for base in bases:
            if seg == "**":
                if last:      # "/a/**": what is inside /a
                    nxt += [os.path.join(base, n) for n in _listdir(base, budget)]
                else:
                    nxt += _descendant_dirs(base, budget)
            elif globs.is_glob(seg):
                names = globs.compile_exact(seg).fullmatch
                nxt += [os.path.join(base, n) for n in _listdir(base, budget) if names(n)]
            else:
                child = os.path.join(base, seg)
                if os.path.lexists(child):
                    nxt.append(child)
        bases = list(dict.fromkeys(nxt))
    return sorted({normalize(b) for b in bases})


def _concrete(patterns: tuple[str, ...], key: str, limit: int,
              shared: "_Budget | None" = None,
              linked: set[str] | None = None) -> list[str]:
    """Existing paths the patterns name; `linked` (filled when given): glob matches
    with a symlink where the glob matched (`_link_in_match`)."""
    out: list[str] = []
    for pat in patterns:
        if globs.is_glob(pat):
            paths = expand_glob(pat, key=key, limit=limit, _budget=shared)
            if linked is not None:
                prefix = globs.static_prefix(pat)
                linked.update(p for p in paths if _link_in_match(prefix, p))
        else:
            paths = [normalize(pat)]
        out += [p for p in paths if os.path.exists(p)]
    return list(dict.fromkeys(out))


def _host_grant(verdict: Verdict) -> bool:
    """A path rule of the policy grants it on the host (not a sandbox area: the private
    /tmp, with or without `filesystem.scratch_exec`, is the sandbox's own)."""
    return verdict.allowed and verdict.rule.startswith(
        ("filesystem.read:", "filesystem.write:", "filesystem.exec:"))


def _link_in_match(prefix: str, path: str) -> bool:
    """Whether a component of `path` below the glob's literal `prefix` is a symlink:
    a name the policy's author never wrote, which anyone who could write there (an
    earlier run granted write on the work directory) may have planted."""
    cur = prefix.rstrip("/")
    for part in path[len(cur):].strip("/").split("/"):
        cur = f"{cur}/{part}"
        if os.path.islink(cur):
            return True
    return False


def check_glob_count(policy: Policy, most: int = PlanBounds.globs) -> None:
    """A plan asked for by a sandbox has at most `most` glob rules. Also called on a
    nested request's policy as soon as it is parsed (sandbox.nested), before the
    ceiling check compiles its patterns: a request of 207 long globs cost the
    launcher 1.1 s before this count refused it in the plan (found by an attack probe)."""
    fs = policy.filesystem
    n = sum(globs.is_glob(p) for p in (*fs.read, *fs.write, *fs.exec, *fs.deny))
    if n > most:
        raise PolicyError(f"{n} glob rules; a plan asked for by a sandbox may have at most "
                          f"{most}", key="filesystem")


def _shared_budget(policy: Policy, bounds: PlanBounds | None) -> "_Budget | None":
    """One budget for all globs of a bounded plan (None: each glob has its own)."""
    if bounds is None:
        return None
    check_glob_count(policy, bounds.globs)
    return _Budget("", "filesystem", bounds.entries, bounds,
                   time.monotonic() + bounds.seconds)


def _sort_key(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _inside(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent + "/")


def build_plan(policy: Policy, *, glob_limit: int = MAX_GLOB_ENTRIES,
               bounds: PlanBounds | None = None) -> FsPlan:
    """The FsPlan of a resolved policy on this host (see the module doc).

    `bounds` (for plans a sandbox asked for) caps the glob work of the whole
    plan in count, entries and time, and stops it when `bounds.cancel` is set."""
    engine: Engine = engine_for(policy)
    fs = policy.filesystem
    shared = _shared_budget(policy, bounds)
    candidates: list[str] = []
    linked: set[str] = set()
    for kind in ("read", "write", "exec"):
        candidates += _concrete(getattr(fs, kind), f"filesystem.{kind}", glob_limit, shared,
                                linked)
    rights: dict[str, tuple[bool, bool, bool, str]] = {}
    for p in dict.fromkeys(candidates):
        area = area_of(p)
        if p in ("/tmp", "/proc", "/dev") or area == "/proc":
            continue
        r = engine.decide("read", p)
        w = engine.decide("write", p)
        x = engine.decide("exec", p)
        if p in linked:
            # The mount layer binds, and Landlock grants, what a path resolves to. A glob
            # match through a link is granted only the rights the policy gives its target
            # itself (`${WORKDIR}/*.txt` must not reach a host file through a link an
            # earlier run planted: tests/test_path_swaps.py).
            real = os.path.realpath(p)
            r, w, x = (v if not v.allowed or _host_grant(engine.decide(k, real)) else
                       Verdict(False, "glob match through a symlink",
                               f"{p} is a symlink to {real}, which no rule grants", p)
                       for k, v in (("read", r), ("write", w), ("exec", x)))
        granted = [v for v in (r, w, x) if v.allowed and v.rule.startswith("filesystem.")]
        if not granted:
            continue     # denied, or only reachable through a sandbox area
        text = "; ".join(dict.fromkeys(v.rule for v in granted))
        rights[p] = (r.allowed, w.allowed, x.allowed, text)

    kept: list[FsRule] = []
    for p in sorted(rights, key=_sort_key):
        read, write, exe, text = rights[p]
        parent = next((k for k in reversed(kept) if _inside(p, k.path)), None)
        same_area = parent is not None and area_of(p) == area_of(parent.path) and (
            area_of(p) is None or parent.path != area_of(p))
        if parent is not None and same_area and (parent.read, parent.write, parent.exec) == (read, write, exe) \
                and not os.path.islink(p):
            continue     # adds nothing to the enclosing bind
        kept.append(FsRule(path=p, read=read, write=write, exec=exe, rule=text, real=real_path(p)))

    masks: list[str] = []
    for d in sorted(_concrete(fs.deny, "filesystem.deny", glob_limit, shared), key=_sort_key):
        if any(_inside(d, m) for m in masks):
            continue
        if any(_inside(d, r.path) and d != r.path for r in kept) and area_of(d) != "/proc":
            masks.append(d)
    return FsPlan(rules=tuple(kept), masks=tuple(masks), tmp_size=fs.tmp_size,
                  output_size=fs.output_size, output_inodes=fs.output_inodes,
                  scratch_exec=fs.scratch_exec)
