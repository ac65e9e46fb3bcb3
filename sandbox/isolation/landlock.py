"""The Landlock layer: the same FsPlan, enforced a second time by the kernel's LSM.

Why both this and the mount view: the view makes everything outside the plan
absent, and masks hide denied paths inside allowed trees (Landlock cannot say
"deny inside allow": its rules only ever add rights beneath a directory, so a
read-only tree holding a mask is granted entry by entry around it,
`around_masks`, and the mask holds even once the kernel has detached it).
Landlock adds a guarantee that does
not depend on the view being right: nothing outside the plan's rules can be
read, written or executed even if a mount were missing or a path reached the
process some other way (an inherited descriptor's directory, a bind mistake),
and it keeps working without namespaces (``best_effort``), where it is the
only filesystem guard.

What is handled (the best the kernel offers; the ABI used is recorded in
``ctx.active`` as ``landlock:abiN``; a right the ABI lacks is simply not
handled):

- filesystem: every access right the ABI knows (ABI 1 rights, REFER from ABI 2,
  TRUNCATE from ABI 3, IOCTL_DEV from ABI 5).
- TCP (ABI 4): for network ``none``, bind and connect are handled with no rule,
  so every TCP bind/connect fails with EACCES even if an interface existed.
  For ``loopback`` they are not handled: Landlock restricts ports, not
  addresses, and the new network namespace already holds nothing but ``lo``,
  so any port on loopback is allowed. ``host`` is the policy's explicit choice.
- scopes (ABI 6): abstract UNIX sockets and signals, so the sandboxee can
  neither connect to an abstract socket made outside its domain nor signal a
  process outside it (the monitor may still signal in).

Rules (added after ``pivot_root``, so paths are those of the view):

- each FsRule: read -> READ_FILE|READ_DIR; exec -> + EXECUTE; write -> + every
  create/remove right, WRITE_FILE, TRUNCATE and REFER. A rule on a file gets
  only the file rights (the kernel refuses directory rights on a file). A
  rule whose path does not exist grants nothing and is skipped.
- always: the private ``/tmp`` and ``/dev/shm`` read+write; ``/dev`` read,
  WRITE_FILE and IOCTL_DEV (null, tty, ...); ``/proc`` read.
- with the mount view: a read-only rule with masks beneath it is granted child
  by child around them (`around_masks`): a mask is a mount the kernel detaches
  when the host replaces the masked file, and the tree's own rule would then
  grant the new file. A writable rule is left whole (its new files need the
  rule), so there the mask alone holds.
- without the mount view (no ``mounts`` in ``ctx.active``): the run's
  ``paths.tmp`` stands for ``/tmp``, and the individual ``/dev`` nodes are
  granted instead of ``/dev``; and since no mask hides the denied paths
  inside granted trees, those rules are granted child by child around the
  masks (`around_masks`), so a deny still holds.

``landlock_restrict_self`` needs no_new_privs, set by the privileges layer.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from functools import lru_cache
from typing import Any, Callable, NamedTuple

from sandbox.errors import SetupError
from sandbox.isolation import beneath, libc, mounts
from sandbox.isolation.context import ContainContext
from sandbox.netproxy.inside import PROXY_PORT

CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

FS_ABI1 = (1 << 13) - 1                    # EXECUTE .. MAKE_SYM
FS_BY_ABI = {1: FS_ABI1, 2: FS_ABI1 | REFER, 3: FS_ABI1 | REFER | TRUNCATE,
             4: FS_ABI1 | REFER | TRUNCATE}
FS_LATEST = FS_ABI1 | REFER | TRUNCATE | IOCTL_DEV   # ABI 5 and later
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

READ = READ_FILE | READ_DIR
WRITE = (READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG
         | MAKE_SOCK | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM | TRUNCATE | REFER)
DEV = READ | WRITE_FILE | IOCTL_DEV
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")

class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class NetPortAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def probe_abi() -> int:
    """The kernel's Landlock ABI version; OSError when there is none (EOPNOTSUPP:
    disabled at boot; ENOSYS: not built in), for `sandbox doctor` to say which."""
    return libc.syscall("landlock_create_ruleset", None, ctypes.c_size_t(0),
                        ctypes.c_uint32(CREATE_RULESET_VERSION))


@lru_cache(maxsize=1)
def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    try:
        return probe_abi()
    except OSError:
        return 0


def handled(abi: int, network_mode: str) -> tuple[int, int, int]:
    """(fs, net, scoped) masks for this ABI: the best it offers."""
    fs = FS_BY_ABI.get(abi, FS_LATEST) if abi > 0 else 0
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 and network_mode == "none" else 0
    if abi >= 4 and network_mode == "allowlist":
        net = NET_CONNECT_TCP      # connect: the proxy's port only (`_add_proxy_rule`)
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def rights_for(read: bool, write: bool, exec_: bool) -> int:
    r = READ if (read or write or exec_) else 0
    if exec_:
        r |= EXECUTE
    if write:
        r |= WRITE
    return r


class PathRule(NamedTuple):
    path: str
    rights: int
    plan: bool = True   # a plan rule: a real path, opened without following any symlink
    # The real paths of masks beneath `path`: then the rule is granted entry by entry
    # around them (`around_masks`, `_add_around`) instead of on `path` itself.
    around: tuple[str, ...] = ()


def around_masks(rules: list[PathRule], masks: tuple[str, ...], *,
                 writable: bool = True, resolve: bool = True) -> list[PathRule]:
    """The masks (deny inside allow) held by Landlock too, which cannot carve a hole in
    a granted tree: a rule with masks beneath it is marked to be granted child by
    child instead, down the directories that lead to a mask, leaving out the masks.
    Fail closed: those directories themselves get no right from the rule (they cannot
    be written directly; with the mount view the view's root rule still lets them be
    listed), symlinks among the children are not granted (a rule on one would grant
    its target), and entries created or replaced later (a new inode) are not covered.

    Why with the mount view too: the kernel detaches a mask whose file the host
    unlinks or renames over (another mount namespace), so a denied file the host
    replaces during a run (`passwd` writing /etc/shadow) would show through a tree
    Landlock grants whole. `writable=False` leaves writable rules whole: a writable
    directory granted child by child could not have its new files opened (Landlock
    has no "files this sandbox made"), so there the mask alone holds
    (docs/threat-model.md). `resolve=False`: `masks` are real paths already (the mount
    table's; in the view a mask, a bind of a deleted file, no longer resolves to its
    own path)."""
    real_masks = set()
    for m in masks:
        found = mounts.resolve(m) if resolve else None
        real_masks.add(found[0] if found is not None else os.path.normpath(m))
    out: list[PathRule] = []
    for rule in rules:
        below = tuple(sorted(m for m in real_masks if m.startswith(rule.path.rstrip("/") + "/")))
        split = below and (writable or not rule.rights & WRITE_FILE)
        out.append(rule._replace(around=below) if split else rule)
    return out


def _add_around(ruleset: int, dir_fd: int, path: str, masks: tuple[str, ...],
                allowed: int, stamps: list[Stamp] | None = None) -> None:
    """Rules on each entry of directory `dir_fd` (at `path`) but the masks and links,
    down the subdirectories that lead to a mask. Each entry is opened relative to the
    directory, without following a link. An entry that changed since it was listed (a
    link now, a file for a directory) is not granted. This runs for every run of every
    built-in policy (their /etc holds the denied secrets: ~150 entries), so the loop
    does one dictionary lookup, one open, one add and one close per entry. (A compiled
    loop was tried: 0.44 against 1.36 ms for /etc in a fork of a warm interpreter, but
    no difference in the Landlock layer of a run, 1.27-1.92 against 1.32-1.65 ms,
    alternated: the kernel's side dominates there.)"""
    base = path.rstrip("/") + "/"
    below: dict[str, list[str]] = {}      # first name under `path` -> the masks it leads to
    for m in masks:
        name, _, rest = m[len(base):].partition("/")
        below.setdefault(name, []).append(m if rest else "")
    if stamps is not None:
        st = os.fstat(dir_fd)
        stamps.append((path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    try:
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in it]
    except OSError:
        return            # cannot be listed (its mode): nothing beneath it is granted
    attr = PathBeneathAttr()
    add, ref = _add_rule_call(ruleset, attr)
    opath = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    for name, is_link, is_dir in entries:
        lead = below.get(name)
        if is_link or (lead is not None and ("" in lead or not is_dir)):
            continue      # a link, a mask, or no directory where a mask was
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                         if lead else opath, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            if lead:
                _add_around(ruleset, fd, base + name, tuple(lead), allowed, stamps)
                continue
            attr.allowed_access = allowed if is_dir else allowed & FILE_RIGHTS
            attr.parent_fd = fd
            if attr.allowed_access:
                add(ref)      # an error: no longer what was listed, and not granted
        finally:
            os.close(fd)


def _add_rule_call(ruleset: int, attr: PathBeneathAttr) -> tuple[Callable[[Any], int], Any]:
    """landlock_add_rule(ruleset, PATH_BENEATH, &attr, 0) as one bound call, its
    arguments converted once: a call per entry of `_add_around`'s loop."""
    call, rs = libc.bound_syscall("landlock_add_rule"), ctypes.c_int(ruleset)
    kind, flags = ctypes.c_int(RULE_PATH_BENEATH), ctypes.c_uint32(0)
    return (lambda ref: call(rs, kind, ref, flags)), ctypes.byref(attr)


def real_paths(ctx: ContainContext) -> dict[str, str]:
    """Each plan rule's real path, as the mount table resolved it before the fork
    (`mounts.Prepared`), or now when no table was made for this plan."""
    table = ctx.mount_table
    if table is not None and table.plan == ctx.fs_plan:
        return table.real
    out = {}
    for r in ctx.fs_plan.rules:
        found = mounts.resolve(r.path)
        if found is not None:
            out[r.path] = found[0]
    return out


def plan_rules(ctx: ContainContext, view: bool | None = None) -> list[PathRule]:
    """The plan's rules at their real paths plus the fixed scratch and device ones;
    those of the mount view when `view` (default: when the mount layer is applied; a
    pooled view's are made before it is, sandbox/isolation/prebuilt.py).

    A plan rule's path is the real path the mount table resolved (a policy path
    may hold links: ``/lib`` on merged-/usr systems, a work directory reached
    through one); `add_path_rules` opens it with RESOLVE_NO_SYMLINKS, so a
    component swapped for a link since then is never followed to its target.
    A rule whose path did not exist then grants nothing."""
    # A copy-on-write rule is writable only through its overlay: without the mount
    # layer (best_effort, no namespaces) it would be the host's directory itself.
    view = "mounts" in ctx.active if view is None else view
    cow_ok = view
    real = real_paths(ctx)
    rules = [PathRule(r.path if r.path in mounts.SPECIAL else real[r.path],
                      rights_for(r.read, r.write and (cow_ok or not r.cow), r.exec))
             for r in ctx.fs_plan.rules if r.path in mounts.SPECIAL or r.path in real]
    tmp_exec = ctx.fs_plan.scratch_exec or any(r.path == "/tmp" and r.exec
                                               for r in ctx.fs_plan.rules)
    scratch = WRITE | (EXECUTE if tmp_exec else 0)
    if view:
        table = ctx.mount_table
        if table is not None and (table.plan is ctx.fs_plan or table.plan == ctx.fs_plan):
            rules = around_masks(rules, tuple(s.path for s in table.steps if s.kind == "mask"),
                                 writable=False, resolve=False)
        else:
            rules = around_masks(rules, ctx.fs_plan.masks, writable=False)
        # The sandbox's own mounts, made by the mount layer (no host link among them).
        rules += [PathRule("/tmp", scratch), PathRule("/dev", DEV), PathRule("/dev/shm", WRITE),
                  PathRule("/proc", READ)]
        # The view's directories may be listed (`ls /`): the view holds only what the
        # plan grants plus the sandbox's own areas, so the names listed are the
        # view's, never the host's. The sandbox's own cgroups (sysview.py), read-only.
        rules += [PathRule("/", READ_DIR), PathRule("/sys/fs/cgroup", READ)]
    else:
        rules = around_masks(rules, ctx.fs_plan.masks)
        # Trusted paths, not plan rules: the launcher's own mkdtemp (its TMPDIR may be
        # reached through a link of the caller's), the host's /proc and device nodes.
        rules += [PathRule(ctx.paths.tmp, scratch, False), PathRule("/proc", READ, False)]
        rules += [PathRule("/dev/" + n, DEV, False) for n in DEV_NODES]
    return rules


def _open_rule(rule: PathRule, view_root: int | None) -> int:
    """An O_PATH descriptor of the rule's path (a directory to list when the rule is
    granted around masks): a plan rule's by the kernel, without following a symlink
    (inside the view when `view_root` is its root)."""
    if not rule.plan:
        return os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
    if view_root is not None:
        return (beneath.open_dir_in_view(view_root, rule.path) if rule.around
                else beneath.open_in_view(view_root, rule.path))
    return beneath.open_dir(rule.path) if rule.around else beneath.open_source(rule.path)


Stamp = tuple[str, int, int, int, int]   # a directory granted around masks, as listed


def add_path_rules(ctx: ContainContext, ruleset: int, rules: list[PathRule], fs: int,
                   root: str | None, stamps: list[Stamp] | None = None) -> None:
    """Each rule, its path opened beneath `root` (the mount view's; None: the host's);
    into `stamps`, (path, device, inode, mtime, ctime) of each directory listed to
    grant a rule around masks (what a pooled view's host compares before serving it:
    an entry added, removed or replaced there changes them)."""
    attr = PathBeneathAttr()
    view_root = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) \
        if root is not None else None
    try:
        for rule in rules:
            try:
                fd = _open_rule(rule, view_root)
            except FileNotFoundError:
                continue  # a grant of something absent grants nothing
            except OSError as exc:
                why = (f"rule for {rule.path}: a symlink is on its path now (swapped since "
                       "the plan was resolved?)" if exc.errno in (errno.ELOOP, errno.EXDEV)
                       else f"open {rule.path}: {exc.strerror} "
                            f"({errno.errorcode.get(exc.errno or 0)})")
                if exc.errno in (errno.ELOOP, errno.EXDEV) and ctx.policy.best_effort:
                    # Never the whole layer (best_effort would run on without it): this
                    # one grant is dropped, so the path is denied, and the result says so.
                    ctx.skipped[f"landlock: {rule.path}"] = why + "; not granted"
                    continue
                raise SetupError("landlock", why) from None
            try:
                if rule.around:
                    _add_around(ruleset, fd, rule.path, rule.around, rule.rights & fs, stamps)
                    continue
                allowed = rule.rights & fs
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed &= FILE_RIGHTS
                if not allowed:
                    continue
                attr.allowed_access, attr.parent_fd = allowed, fd
                libc.syscall("landlock_add_rule", ctypes.c_int(ruleset),
                             ctypes.c_int(RULE_PATH_BENEATH), ctypes.byref(attr),
                             ctypes.c_uint32(0))
            except OSError as exc:
                raise SetupError("landlock", f"rule for {rule.path}: {exc.strerror} "
                                 f"({errno.errorcode.get(exc.errno or 0)})") from None
            finally:
                os.close(fd)
    finally:
        if view_root is not None:
            os.close(view_root)


def _add_init_rule(ruleset: int, init_fd: int, fs: int) -> None:
    """The sandbox's init (opened before the view, started by descriptor) may be executed:
    a rule on that one file, whatever the policy grants."""
    attr = PathBeneathAttr(fs & (EXECUTE | READ_FILE), init_fd)
    try:
        libc.syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                     ctypes.byref(attr), ctypes.c_uint32(0))
    except OSError as exc:
        raise SetupError("landlock", f"rule for the sandbox's init: {exc.strerror}") from None


def _add_proxy_rule(ruleset: int) -> None:
    """mode = "allowlist": TCP connect only to the proxy's port (any address: inside the
    sandbox only its own `lo` exists, where the monitor listens on that port)."""
    attr = NetPortAttr(NET_CONNECT_TCP, PROXY_PORT)
    try:
        libc.syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(RULE_NET_PORT),
                     ctypes.byref(attr), ctypes.c_uint32(0))
    except OSError as exc:
        raise SetupError("landlock", f"rule for the proxy port: {exc.strerror}") from None


def apply(ctx: ContainContext, *, abstract_scope: bool = True) -> None:
    """`abstract_scope=False`: for the broker process (sandbox/monitor/broker_process.py),
    which acts on the sandbox's own abstract sockets from a domain of its own. A ruleset
    PID 1's setup child built (`build`, sandbox/isolation/apart.py) is enforced as is."""
    if ctx.landlock_ruleset >= 0:
        ruleset, abi = ctx.landlock_ruleset, ctx.landlock_abi
        ctx.landlock_ruleset = -1
    elif ctx.landlock_error:
        raise SetupError("landlock", ctx.landlock_error)   # the setup child's build's
    else:
        ruleset, abi = build(ctx, abstract_scope=abstract_scope)
    try:
        try:
            libc.syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(0))
        except OSError as exc:
            hint = " (no_new_privs not set?)" if exc.errno == errno.EPERM else ""
            raise SetupError("landlock", f"landlock_restrict_self: {exc.strerror}{hint}") from None
    finally:
        os.close(ruleset)
    ctx.active.append(f"landlock:abi{abi}")


def build(ctx: ContainContext, *, abstract_scope: bool = True) -> tuple[int, int]:
    """The ruleset of `ctx` (a descriptor) and the ABI it was made for: a pooled view's
    ruleset made with the view, completed with the run's own rules, when it is the one
    this run would make (`Prebuilt.landlock`), else a new one. Raises SetupError."""
    abi = abi_version()
    if abi < 1:
        raise SetupError("landlock", "kernel has no Landlock (see sandbox doctor)")
    fs, net, scoped = handled(abi, ctx.policy.network.mode)
    if not abstract_scope:
        scoped &= ~SCOPE_ABSTRACT_UNIX_SOCKET
    if ctx.prebuilt is not None and abstract_scope and "mounts" in ctx.active:
        ahead = ctx.prebuilt.landlock(ctx, (fs, net, scoped))
        if ahead is not None:
            return ahead, abi
    ruleset = create_ruleset(abi, (fs, net, scoped))
    try:
        add_path_rules(ctx, ruleset, plan_rules(ctx), fs,
                       "/" if "mounts" in ctx.active else None)
        add_fixed_rules(ctx, ruleset, fs, net)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset, abi


def create_ruleset(abi: int, masks: tuple[int, int, int]) -> int:
    """A new ruleset handling (fs, net, scoped) `masks` (`handled`). Raises SetupError."""
    attr = RulesetAttr(*masks)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    try:
        return libc.syscall("landlock_create_ruleset", ctypes.byref(attr),
                            ctypes.c_size_t(size), ctypes.c_uint32(0))
    except OSError as exc:
        raise SetupError("landlock", f"landlock_create_ruleset: {exc.strerror}") from None


def add_fixed_rules(ctx: ContainContext, ruleset: int, fs: int, net: int) -> None:
    """The rules of no plan: the sandbox's init, the allowlist proxy's port."""
    if ctx.init_fd >= 0:
        _add_init_rule(ruleset, ctx.init_fd, fs)
    if net & NET_CONNECT_TCP and ctx.policy.network.mode == "allowlist":
        _add_proxy_rule(ruleset)
