"""A pooled sandbox's view, built in two parts: the policy's before the run, the run's after.

Why: the mount layer is the largest step of a start (3.5-4.7 ms of a ~25 ms
strict `/bin/true`, docs/benchmarks-journal.md), and most of it (the directories the
policy binds, /dev, /proc, /tmp, the masks, the generated /etc files, the
cgroup tree) is the same for every run of one policy. A pooled PID 1
(sandbox/monitor/pool_stubs.py, level "view") builds that part while it waits
for a run (`build`); when the run comes, only the steps that name the run's own
directories (its output, its work directory, anything at or under them) are
left, then the root turns read-only and PID 1 pivots into it, as a cold start
does (`Prebuilt.finish`).

What must hold, and how:

- **The view a cold start builds.** `split` leaves a step for later only when it
  names a run directory, and refuses to split (the plan then gets no view pool)
  when doing the late steps after the early ones would change the result: a late
  step covered by, or covering, an early step that comes after it in the table's
  order (a mask over a late bind), or one at or around what the system view
  writes (/etc, /dev, /sys/fs/cgroup, the private HOME). A run with a terminal
  is never served so (its pty is bound under /dev).
- **The plan the view was built for.** `finish` compares the run's early steps,
  computed now, with those it built, and fails the run otherwise (closed). The
  monitor host compares them before it hands the sandbox over and starts the
  run cold instead (pool_stubs), so this never fires unless the host is wrong.
- **The host as it is now.** A bind holds the directory it bound, so a
  directory replaced since (`rm -rf venv && python -m venv venv`) would be the
  old one's in the view; and a mask is mounted on the masked file, so a file
  replaced since (`passwd` renames a new /etc/shadow over the old) would detach
  the mask (the kernel detaches mounts on a dentry unlinked in another mount
  namespace) and show the new file. So `build` reports the (device, inode) of
  each bound source and each masked object, and the host compares them with the
  paths' now before it serves the sandbox; the host also compares its mount
  table (a mount made since would be missing) and the /etc files the view's
  copies were made from.

The Landlock ruleset is made with the view too (`ahead`): every rule but the
run's own (at or under a run directory), opened beneath the view's root, which
the pivot keeps (a rule holds the inode). Every built-in policy's /etc is
granted entry by entry around its denied secrets (landlock_around.py), ~1 ms of
a run made cold; so a host entry added, removed or replaced since in such
a directory would be missing from the rules, and each directory listed is
reported with its stamp (device, inode, mtime, ctime), which the host compares
before serving the sandbox as it compares the bound sources. At Landlock's turn
PID 1 takes the ruleset only when the run's rules outside its own
directories are the ones it holds, and adds the run's (`Prebuilt.landlock`);
else it makes one whole, as a cold start does. A rule granted around masks
that holds a run directory, or a rule skipped under best_effort, leaves the
whole ruleset to the run.

The view under construction lives at `<scratch>/root`, where `scratch` is a
directory the monitor host made for its pools (the pooled context's rundir):
each pooled PID 1 mounts a tmpfs of its own over it, in its own mount
namespace, which holds the view's root, the mask file and the generated /etc
files, and goes with the old root at the pivot. Nothing is written on the host.
"""
from __future__ import annotations

import marshal
import os
from dataclasses import dataclass, field

from sandbox.errors import SetupError
from sandbox.isolation import identity, landlock, mount_plan, mounts, namespaces
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.isolation.mount_steps import Step

# What the system view writes into the view (mounts.system_view, sysview.py) after the
# steps: a late step at or around one of these would land in a different order
SYSTEM = ("/etc", "/dev", "/sys/fs/cgroup", identity.HOME_DIR)
RUN_OWN = frozenset({"output", "overlay", "rebind"})   # steps that are always the run's
SHARED = frozenset({"tmp", "proc", "dev"})   # the sandbox's own, whatever the run
# The runs a pooled view serves (by their spec's mode): an exec'd program's PID 1 finishes
# the view itself, a Python action's setup child does (sandbox/sandboxee/planned.py)
VIEW_MODES = ("exec", "workflow")
# What a pooled PID 1 keeps of the view built for it: `Prebuilt.to_bytes()` and the
# Landlock ruleset made with it (-1: none)
Built = tuple[bytes, int]


def run_dirs(paths: RunPaths) -> tuple[str, ...]:
    """The run's own directories, each as given and as the kernel resolves it."""
    out: list[str] = []
    for p in (paths.rundir, paths.workdir, paths.output):
        if p:
            for spelling in (os.path.abspath(p), os.path.realpath(p)):
                if spelling not in out:
                    out.append(spelling)
    return tuple(out)


def _overlap(a: str, b: str) -> bool:
    return mount_plan.under(a, b) or mount_plan.under(b, a)


def is_late(step: Step, dirs: tuple[str, ...]) -> bool:
    """A step of the run's own: its output, its copy-on-write layer, anything at or
    under one of its directories."""
    if step.kind in RUN_OWN:
        return True
    if step.kind in SHARED:
        return False
    return any(mount_plan.under(step.path, d) for d in dirs)


def split(steps: list[Step], dirs: tuple[str, ...]) -> tuple[list[Step], list[Step]] | None:
    """`steps` as (early, late): the policy's, built before the run, and the run's own,
    in their order; None when building them so would not give the cold view (module
    doc), or when nothing is early."""
    late = [is_late(s, dirs) for s in steps]
    for i, step in enumerate(steps):
        if not late[i]:
            continue
        if any(_overlap(step.path, p) for p in SYSTEM):
            return None
        if any(not late[j] and _overlap(steps[j].path, step.path)
               for j in range(i + 1, len(steps))):
            return None
    early = [s for s, is_l in zip(steps, late) if not is_l]
    if not early:
        return None
    return early, [s for s, is_l in zip(steps, late) if is_l]


def _late_rule(rule: landlock.PathRule, dirs: tuple[str, ...]) -> bool:
    return any(mount_plan.under(rule.path, d) for d in dirs)


@dataclass
class Prebuilt:
    """What a pooled PID 1 built before its run: where, which steps, the (device,
    inode) of each bound source and each masked object as it was mounted on, and the
    Landlock rules made ahead (`ahead`): their masks (fs, net, scoped), the rules,
    and the stamp of each directory listed for them; `ruleset` is that ruleset's
    descriptor in PID 1 (-1: none), never marshalled."""
    root: str
    early: list[Step]
    mask_file: list[str] = field(default_factory=list)
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    handled: tuple[int, int, int] = (0, 0, 0)
    rules: list[landlock.PathRule] = field(default_factory=list)
    stamps: list[landlock.Stamp] = field(default_factory=list)
    ruleset: int = -1

    def to_bytes(self) -> bytes:
        """What a pooled PID 1 keeps of the view its setup child built (marshal)."""
        return marshal.dumps((self.root, [(s.kind, s.path, s.source, s.is_dir, s.attrs, s.exec)
                                          for s in self.early],
                              self.mask_file, self.seen, self.handled,
                              [tuple(r) for r in self.rules]))

    @classmethod
    def from_bytes(cls, data: bytes) -> "Prebuilt":
        root, early, mask_file, seen, handled, rules = marshal.loads(data)
        return cls(root, [Step(*s) for s in early], list(mask_file), dict(seen),
                   tuple(handled), [landlock.PathRule(*r) for r in rules])

    def ahead(self, ctx: ContainContext) -> None:
        """In the view's setup child, once the early steps and the system view are
        mounted: the Landlock ruleset with every rule outside the run's own
        directories (module doc); none when it cannot be made so."""
        abi = landlock.abi_version()
        if abi < 1:
            return
        masks = landlock.handled(abi, ctx.policy.network.mode)
        dirs = run_dirs(ctx.paths)
        rules = landlock.plan_rules(ctx, view=True)
        if any(r.around and any(mount_plan.under(d, r.path) for d in dirs) for r in rules):
            return          # listed now, it would not hold the run's mounts beneath it
        early = [r for r in rules if not _late_rule(r, dirs)]
        skipped = dict(ctx.skipped)
        stamps: list[landlock.Stamp] = []
        try:
            fd = landlock.create_ruleset(abi, masks)
        except SetupError:
            return
        try:
            landlock.add_path_rules(ctx, fd, early, masks[0], self.root, stamps)
        except (SetupError, OSError):
            os.close(fd)
            return
        if ctx.skipped != skipped:   # best_effort dropped a grant: the run says so itself
            ctx.skipped = skipped
            os.close(fd)
            return
        self.handled, self.rules, self.stamps, self.ruleset = masks, early, stamps, fd

    def landlock(self, ctx: ContainContext, masks: tuple[int, int, int]) -> int | None:
        """At the run, in its setup child (landlock.build): the ruleset made ahead with
        the run's own rules added, when the run's other rules are the ones it holds;
        None otherwise (the run makes one whole, and the one made ahead is closed: a
        Python action's program, a fork, must not inherit it)."""
        if self.ruleset < 0:
            return None
        dirs = run_dirs(ctx.paths)
        rules = landlock.plan_rules(ctx)
        if masks != self.handled or [r for r in rules if not _late_rule(r, dirs)] != self.rules:
            os.close(self.ruleset)
            self.ruleset = -1
            return None
        fd, self.ruleset = self.ruleset, -1     # the caller's now: it closes it
        try:
            landlock.add_path_rules(ctx, fd, [r for r in rules if _late_rule(r, dirs)],
                                    masks[0], "/")
            landlock.add_fixed_rules(ctx, fd, masks[0], masks[1])
        except BaseException:
            os.close(fd)
            raise
        return fd

    def finish(self, ctx: ContainContext) -> str:
        """The mount layer's part once the run is known (mounts.apply): the run's own
        steps, then the root sealed. Returns the root to pivot into."""
        if ctx.tty:   # never sent: its pty is bound under /dev, built before the run
            raise SetupError("mounts", "a pooled view cannot bind the run's terminal")
        table = mounts.table_of(ctx)
        got = split(table.steps, run_dirs(ctx.paths))
        if got is None or got[0] != self.early:
            raise SetupError("mounts", "the pooled view was built for another plan; "
                                       "run again (it starts cold)")
        held = mounts.run_steps(ctx, got[1], self.root, self.mask_file,
                                os.path.realpath(ctx.paths.rundir))
        mounts.seal_root(self.root, table.steps, self.mask_file)
        ctx.output_fd = held.get("output")
        ctx.cow_fd = held.get("cow")
        return self.root


def attach(ctx: ContainContext, built: Built | None) -> None:
    """In the PID 1 of a pooled view's run (or its setup child): the view it built
    (`Prebuilt.to_bytes`, and the Landlock ruleset made ahead, -1: none) for the run's
    mount and Landlock layers, the ruleset kept through the privileges layer's close
    of the rest."""
    if built is None:
        return
    record, ruleset = built
    ctx.prebuilt = Prebuilt.from_bytes(record)
    if ruleset >= 0:
        ctx.prebuilt.ruleset = ruleset
        ctx.keep_fds = (*ctx.keep_fds, ruleset)


def build(ctx: ContainContext) -> Prebuilt:
    """In a pooled PID 1, before its run: the namespace layer's part (hostname, no
    propagation), a tmpfs of its own over the scratch directory (`ctx.paths.rundir`),
    the root in it, the early steps (`ctx.mount_table`: the host split the table of
    the pool's plan), and the system view. Raises SetupError."""
    namespaces.apply(ctx)
    scratch = mounts.scratch_at(os.path.realpath(ctx.paths.rundir))
    root = mounts.new_root(scratch)
    table = mounts.table_of(ctx)
    done = Prebuilt(root, list(table.steps))
    held = mounts.run_steps(ctx, done.early, root, done.mask_file, scratch, done.seen)
    for fd in held.values():   # never: the host sends no step of the run's own
        os.close(fd)
    if held:
        raise SetupError("mounts", "a pooled view's early steps made a run's own mount")
    mounts.system_view(ctx, root)
    done.ahead(ctx)
    return done
