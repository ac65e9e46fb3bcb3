"""The Landlock layer: the same FsPlan, enforced a second time by the kernel's LSM.

Why both this and the mount view: the view makes everything outside the plan
absent, and masks hide denied paths inside allowed trees (Landlock cannot say
"deny inside allow": its rules only ever add rights beneath a directory, so a
read-only tree holding a mask is granted entry by entry around it,
landlock_around.py, and the mask holds even once the kernel has detached it).
Landlock adds a guarantee that does not depend on the view being right: nothing outside the plan's rules can be
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

from sandbox.errors import SetupError
from sandbox.isolation import beneath, libc, mount_plan
from sandbox.isolation.context import ContainContext
# the kernel's interface, and the grant around masks: here too, as the layer's names
from sandbox.isolation.landlock_abi import (  # noqa: F401
    CREATE_RULESET_VERSION, DEV, EXECUTE, FILE_RIGHTS, FS_ABI1, FS_BY_ABI, FS_LATEST,
    IOCTL_DEV, MAKE_BLOCK, MAKE_CHAR, MAKE_DIR, MAKE_FIFO, MAKE_REG, MAKE_SOCK, MAKE_SYM,
    NET_BIND_TCP, NET_CONNECT_TCP, READ, READ_DIR, READ_FILE, REFER, REMOVE_DIR,
    REMOVE_FILE, RULE_NET_PORT, RULE_PATH_BENEATH, SCOPE_ABSTRACT_UNIX_SOCKET,
    SCOPE_SIGNAL, TRUNCATE, WRITE, WRITE_FILE, NetPortAttr, PathBeneathAttr, RulesetAttr,
    abi_version, handled, probe_abi, rights_for)
from sandbox.isolation.landlock_around import PathRule, Stamp, add_around, around_masks
from sandbox.netproxy.inside import PROXY_PORT

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def real_paths(ctx: ContainContext) -> dict[str, str]:
    """Each plan rule's real path, as the mount table resolved it before the fork
    (`mount_steps.Prepared`), or now when no table was made for this plan."""
    table = ctx.mount_table
    if table is not None and table.plan == ctx.fs_plan:
        return table.real
    out = {}
    for r in ctx.fs_plan.rules:
        found = mount_plan.resolve(r.path)
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
    rules = [PathRule(r.path if r.path in mount_plan.SPECIAL else real[r.path],
                      rights_for(r.read, r.write and (cow_ok or not r.cow), r.exec))
             for r in ctx.fs_plan.rules if r.path in mount_plan.SPECIAL or r.path in real]
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
                    add_around(ruleset, fd, rule.path, rule.around, rule.rights & fs, stamps)
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
