"""Every host-side lookup of a path by name in the package, classified (issue 14).

One path resolver, the kernel's: what the trusted side does for a run on a path a
sandbox can influence (a directory a run may write, this one, a concurrent one or
an earlier one that shared it: a work directory, an output, a tree granted write)
is done on a descriptor the kernel resolved (openat2 with RESOLVE_NO_SYMLINKS,
RESOLVE_IN_ROOT, O_NOFOLLOW per component: `sandbox/isolation/beneath.py`,
`sandbox/monitor/root_walk.py`, `sandbox/launcher/output_path.py`), never on a
name resolved again later. `os.path.realpath`, `os.readlink`, `os.path.islink`,
`lexists`, `exists`, `isdir` and `isfile` look a name up each time they are
called, so each call site below is named with why it is safe:

- ``trusted``: a path no sandbox can write (the install, the caller's policy
  file, the launcher's own state directory or rundir, the host's /etc, /sys);
- ``plan``: policy semantics, resolved once when the plan is made (a rule reaches
  what its path resolves to then); what is acted on later uses the real path with
  RESOLVE_NO_SYMLINKS (mount layer, Landlock, copy-out), so a swap after it fails
  closed (`tests/test_path_swaps.py`, `tests/test_mount_swap.py`);
- ``kernel``: reads the link of a descriptor already held (``/proc/self/fd/N``,
  ``readlinkat`` on a directory descriptor): the kernel's answer, no lookup;
- ``report``: only decides the wording of a message, hint or record; nothing is
  opened, written or granted from it.

`os.path.abspath` is lexical (no lookup) and not listed. A new call site of one
of these functions fails this test until it is added here with its reason, and
a listed one that is gone fails it too, so the list stays the audit.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CALLS = {("os", "path", "realpath"), ("os", "readlink"), ("os", "path", "islink"),
         ("os", "path", "lexists"), ("os", "path", "exists"), ("os", "path", "isdir"),
         ("os", "path", "isfile")}

T, P, K, R = "trusted", "plan", "kernel", "report"
ALLOWED: dict[tuple[str, str, str], tuple[str, str]] = {
    # -- the sandbox's side: PID 1 builds the view -------------------------------------
    ("isolation/mount_plan.py", "resolve", "realpath"):
        (K, "fallback without /proc of the O_PATH descriptor's link; at plan time"),
    ("isolation/mount_plan.py", "resolve", "readlink"):
        (K, "/proc/self/fd/N of the O_PATH descriptor just opened: the plan's real path"),
    ("isolation/mount_plan.py", "links_on_the_way", "islink"):
        (P, "which links a rule's path holds, when the table is made; each is recreated "
            "beneath the view's root by descriptor (_make_link: ELOOP on a swap)"),
    ("isolation/mount_plan.py", "links_on_the_way", "readlink"):
        (P, "the text of those links, recreated in the view as text, never followed"),
    ("isolation/mounts.py", "build_view", "realpath"):
        (T, "the rundir: the launcher's own mkdtemp (0700), no sandbox writes it"),
    ("isolation/mounts.py", "scratch_at", "isdir"):
        (T, "<rundir>/view, ditto; or the monitor host's own mkdtemp (0700) for pools"),
    ("isolation/prebuilt.py", "Prebuilt.finish", "realpath"): (T, "the rundir, ditto"),
    ("isolation/prebuilt.py", "build", "realpath"):
        (T, "the monitor host's scratch directory: its own mkdtemp (0700)"),
    ("isolation/prebuilt.py", "run_dirs", "realpath"):
        (P, "which steps are the run's own, decided by the host at take and again by "
            "PID 1: a swap in between makes the two disagree and the run fails closed "
            "(Prebuilt.finish); every step still binds its real path by descriptor"),
    ("isolation/mounts.py", "_make_mountpoint", "lexists"):
        (T, "<rundir>/cow, the launcher's own"),
    ("isolation/sysview.py", "etc_files", "islink"):
        (T, "the view's /etc is the host's, root's, bound read-only; a link is skipped"),
    ("isolation/sysview.py", "etc_files", "isfile"): (T, "ditto"),
    ("isolation/sysview.py", "etc_files", "realpath"):
        (T, "the host's /etc/<name> against the plan's masks (root's files)"),
    ("isolation/sysview.py", "home", "lexists"):
        (T, "/tmp/home in the run's private /tmp tmpfs, made by the mount layer"),
    ("isolation/sysview.py", "home", "isdir"): (T, "the view's /tmp, ditto"),
    ("isolation/sysview.py", "make_pts_points", "lexists"):
        (T, "/dev/ptmx in the run's fresh /dev tmpfs"),
    ("isolation/sysview.py", "_mkdirs", "islink"):
        (T, "/sys/fs/cgroup in the view: our tmpfs, or the host's sysfs bound read-only"),
    ("isolation/sysview.py", "_mkdirs", "isdir"): (T, "ditto"),
    # -- the launcher ------------------------------------------------------------------
    ("launcher/prepare.py", "refuse_hidden", "realpath"):
        (T, "the hidden paths are the launcher's own state (the audit store); the "
            "workdir/output as the caller named them, compared before the run"),
    ("launcher/prepare.py", "hide", "realpath"):
        (T, "the launcher's own state directories, denied to the run"),
    ("launcher/prepare.py", "runtime_rules", "isdir"):
        (R, "an InputError for a code path that is no directory; the rule is planned"),
    ("policy/workdir_overlay.py", "overlaid", "realpath"):
        (P, "the work directory the caller named, resolved with the plan (for the launcher's "
            "grant and for policy explain); the overlay's lower layer is opened at it with "
            "RESOLVE_NO_SYMLINKS (beneath.open_source)"),
    ("launcher/workdir_cow.py", "mark", "realpath"):
        (P, "the same real path, to flag the plan's rule; nothing is opened"),
    ("launcher/keep.py", "hide_history", "isdir"):
        (T, "the history directory: the launcher's own state"),
    ("launcher/output_path.py", "_Walk.step", "readlink"):
        (K, "readlinkat on the walk's directory descriptor, after fstat said it is a "
            "link of the caller's or root's (O_NOFOLLOW per component)"),
    ("launcher/exec_failure.py", "describe", "exists"):
        (R, "the wording of an exec failure's message"),
    ("launcher/exec_failure.py", "describe", "isdir"): (R, "ditto"),
    ("launcher/hints.py", "make", "lexists"):
        (R, "whether a denied path exists on the host, for a hint's wording"),
    ("launcher/hints.py", "for_enclosing_repository", "lexists"):
        (R, "a .git in a parent of the work directory, for a hint's wording after the run "
            "(a sandbox that may write there can at most add or drop that hint)"),
    ("launcher/hints.py", "for_enclosing_repository", "realpath"):
        (T, "the caller's home, never offered as a grant"),
    ("launcher/hints.py", "for_path_search", "isfile"):
        (R, "whether a later PATH entry has the name a refused look was for, for a hint "
            "after the run (the engine decides whether the view shows it)"),
    ("launcher/hints.py", "for_arguments", "lexists"):
        (R, "whether a path the caller named (an argument) is in the host's /tmp, for a "
            "hint: the caller's own input, after the run"),
    # -- the monitor -------------------------------------------------------------------
    ("monitor/root_walk.py", "Root.fd_path", "readlink"):
        (K, "the link of a descriptor the kernel resolved in the sandbox's root"),
    ("monitor/root_walk.py", "link_target", "readlink"):
        (K, "readlinkat on a directory descriptor; the text is resolved by openat2 "
            "RESOLVE_IN_ROOT, never by name"),
    ("monitor/broker_exec.py", "Executor._open_at", "readlink"):
        (K, "readlinkat(fd, \"\") of an O_PATH descriptor held"),
    ("monitor/copy_out.py", "_Copier.entry", "readlink"):
        (K, "readlinkat on the output tmpfs' directory descriptor; copied as text"),
    ("monitor/audit_paths.py", "Paths.base", "readlink"):
        (R, "the directory a relative audited path starts from, as text for the record "
            "and the decision; acting (the broker, access(X_OK)) goes through root_walk"),
    ("monitor/run_end.py", "output", "isdir"):
        (R, "whether to sanitize in place at all; sanitize opens the output with "
            "RESOLVE_NO_SYMLINKS (copy_out.open_dest) and fails closed on a swap"),
    ("monitor/notify_store.py", "open_writer", "realpath"):
        (T, "the audit store: the launcher's own state, hidden from every view"),
    ("monitor/cgroups.py", "_write_limits", "exists"):
        (T, "a file of the run's cgroup (cgroupfs), made by the monitor"),
    ("monitor/cgroups.py", "cleanup_stale", "isdir"):
        (T, "a stale run's freezer cgroup (cgroupfs on the host, no sandbox's view)"),
    ("monitor/cgroup_probe.py", "_probe_v1", "isdir"): (T, "/sys/fs/cgroup on the host"),
    # -- the policy engine: plan time ------------------------------------------------------
    ("policy/variables.py", "real_path", "readlink"):
        (K, "/proc/self/fd/N of an O_PATH descriptor: the kernel's walk"),
    ("policy/variables.py", "real_path", "realpath"): (P, "its fallback without /proc"),
    ("policy/variables.py", "_python_paths", "realpath"):
        (T, "the interpreter's and this package's own directories"),
    ("policy/planner.py", "_concrete", "exists"):
        (P, "a rule for a missing path grants nothing; decided when the plan is made"),
    ("policy/planner.py", "expand_glob", "lexists"): (P, "glob expansion, ditto"),
    ("policy/planner.py", "_descendant_dirs", "isdir"):
        (P, "glob expansion walks directories, never through a link"),
    ("policy/planner.py", "_descendant_dirs", "islink"): (P, "ditto"),
    ("policy/planner.py", "_link_in_match", "islink"):
        (P, "whether a glob match goes through a link: then only what the policy "
            "grants the target itself is planned"),
    ("policy/planner.py", "build_plan", "realpath"):
        (P, "the target of such a match, decided by the engine at plan time; bound "
            "at it with RESOLVE_NO_SYMLINKS"),
    ("policy/planner.py", "build_plan", "islink"):
        (P, "a link under a rule keeps a rule of its own (its target is bound)"),
    ("policy/confine.py", "check_plan", "realpath"):
        (P, "a nested plan is compared at each rule's path and its real path: what "
            "the mount layer will bind; a swap after it fails the bind closed"),
    ("policy/confine.py", "own_roots", "realpath"):
        (P, "the run's fresh WORKDIR/OUTPUT in both spellings, made by the launcher"),
    ("policy/credentials.py", "denies", "lexists"):
        (P, "which credential stores exist under a granted home: added as denies"),
    ("policy/canonical.py", "kernel_path", "islink"):
        (R, "`policy explain` and the differential test predict a walk; nothing is "
            "acted on from it"),
    ("policy/canonical.py", "kernel_path", "readlink"): (R, "ditto"),
    ("policy/canonical.py", "kernel_path", "isdir"): (R, "ditto"),
    ("policy/loader.py", "_load", "isfile"): (T, "a policy file the caller named"),
    ("policy/loader.py", "_load", "isdir"): (T, "ditto: said to be a directory, not a file"),
    ("policy/loader.py", "_Loader.load_file", "realpath"):
        (T, "the caller's policy file, for the cache key and `extends` cycles"),
    ("policy/loader.py", "_Loader.load_data", "realpath"): (T, "ditto"),
    ("policy/loader.py", "_Loader.locate_ref", "isfile"):
        (T, "`extends` of a trusted file: beside it, or on the search path"),
    ("policy/loader.py", "load_policy_sourced", "realpath"):
        (T, "the cache key of a policy file, with its sources"),
    ("policy/sources.py", "SourceFile.of_bytes", "realpath"):
        (T, "the name of a policy file read, for the warm pools' invalidation"),
    ("policy/search.py", "builtin_dir", "isdir"): (T, "the install's policies/"),
    ("policy/search.py", "find_policy", "isfile"): (T, "the policy search path"),
    ("policy/search.py", "find_policy", "realpath"): (T, "ditto"),
    # -- the service, outside every sandbox's view (tenancy refuses grants into it) ---------
    ("service/config.py", "prepare_state", "realpath"):
        (T, "the service's state directory, opened O_NOFOLLOW and checked first"),
    ("service/tenancy.py", "state_overlap", "realpath"):
        (T, "the service's own state directory; each grant's real path is the kernel's "
            "walk (variables.real_path), at submit and again when the run starts"),
    ("service/tenancy.py", "check", "realpath"): (P, "the run's own directories, ditto"),
    ("service/files.py", "list_outputs", "isdir"):
        (R, "an early empty answer; the walk opens O_NOFOLLOW per component"),
    ("service/files.py", "list_outputs", "islink"): (R, "ditto"),
    ("service/auth.py", "ensure_admin", "lexists"):
        (T, "the admin token file in the state directory; opened O_NOFOLLOW"),
    ("service/privdrop.py", "_chown_group", "exists"): (T, "a cgroup directory (cgroupfs)"),
    ("service/audit_mask.py", "mask_file", "isfile"):
        (T, "a run's file in the audit store: the launcher's own state, hidden from every view"),
    ("service/scaleout/worker.py", "ship_outputs", "isdir"):
        (R, "whether a run left outputs; shipped through service.files' O_NOFOLLOW walk"),
    # -- the caller's own tools and state ---------------------------------------------------
    ("audit/store.py", "ensure_dir", "lexists"): (T, "the audit store (launcher's state)"),
    ("audit/store.py", "ensure_dir", "isdir"): (T, "ditto"),
    ("audit/store.py", "connect", "isdir"): (T, "ditto"),
    ("audit/__init__.py", "export_jsonl", "isdir"): (T, "ditto"),
    ("audit/verdicts.py", "guarded_prefixes", "lexists"):
        (R, "which denied names a writable rule could create, for the audit verdicts"),
    ("history.py", "History._connect", "exists"): (T, "the history database (state)"),
    ("history.py", "History.list", "exists"): (T, "ditto"),
    ("thin/daemon.py", "Daemon.bind", "lexists"):
        (T, "the daemon's socket in a private (0700) directory of the caller's"),
    ("thin/control.py", "stop", "lexists"): (T, "ditto"),
    ("thin/wire.py", "package_dir", "realpath"):
        (T, "this install's own package directory, from its code's path (the daemon's name)"),
    ("_native/__init__.py", "_compile", "exists"):
        (T, "a temporary file of its own in the launcher's state directory (0700), where "
            "the init or the thin client is built"),
    ("workflow/static_check.py", "find_source", "isdir"):
        (T, "the caller's action code on its sys.path, before any run"),
    ("workflow/static_check.py", "find_source", "isfile"): (T, "ditto"),
    ("bench/spawn.py", "_exec_cmd", "exists"): (T, "the venv's `sandbox` script"),
    ("bench/sweep.py", "sandboxes_alive.running", "readlink"):
        (K, "/proc/PID/exe of the bench's own sandboxes: which binary the kernel runs, "
            "only to count them"),
    ("cli/common.py", "check_output_dir", "lexists"):
        (R, "a friendly early refusal; output_path.private_dir decides by descriptor"),
    ("cli/common.py", "check_output_dir", "isdir"): (R, "ditto"),
    ("cli/common.py", "check_run_paths", "isdir"): (R, "a one-line refusal of -w"),
    ("cli/grants.py", "_checked", "lexists"):
        (R, "a one-line refusal of a command-line grant naming nothing; the plan decides"),
    ("cli/common.py", "check_state_dir", "isdir"): (R, "ditto, for --state"),
    ("cli/common.py", "check_writable_file", "isdir"): (R, "ditto, for --result etc."),
    ("cli/common.py", "policy_path_hint", "exists"): (R, "a hint's wording"),
    ("cli/common.py", "preflight", "isdir"): (R, "a one-line refusal"),
    ("cli/gc_cmd.py", "run", "isfile"): (T, "the service's state directory the caller named"),
    ("cli/gc_cmd.py", "run", "realpath"): (T, "ditto"),
    ("cli/runs_remote.py", "download", "isdir"):
        (R, "a one-line refusal; the client writes beneath an O_NOFOLLOW walk"),
}


def _dotted(node: ast.AST) -> tuple[str, ...] | None:
    out: list[str] = []
    while isinstance(node, ast.Attribute):
        out.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        out.append(node.id)
        return tuple(reversed(out))
    return None


def call_sites() -> set[tuple[str, str, str]]:
    """(module under sandbox/, enclosing Class.function, call) of every lookup by name."""
    found: set[tuple[str, str, str]] = set()
    pkg = ROOT / "sandbox"
    for path in sorted(pkg.rglob("*.py")):
        module = str(path.relative_to(pkg))
        scope: list[str] = []

        class Visitor(ast.NodeVisitor):
            def visit_FunctionDef(self, node: ast.AST) -> None:
                scope.append(node.name)  # type: ignore[attr-defined]
                self.generic_visit(node)
                scope.pop()

            visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

            def visit_Call(self, node: ast.Call) -> None:
                name = _dotted(node.func)
                if name in CALLS:
                    found.add((module, ".".join(scope) or "<module>", name[-1]))
                self.generic_visit(node)

        Visitor().visit(ast.parse(path.read_text(), str(path)))
    return found


def test_every_lookup_by_name_is_classified():
    sites = call_sites()
    new = sorted(sites - set(ALLOWED))
    assert not new, ("a path is looked up by name here; act on a descriptor the kernel "
                     "resolved (sandbox/isolation/beneath.py), or add the site to ALLOWED "
                     f"with why no sandbox can influence it: {new}")
    gone = sorted(set(ALLOWED) - sites)
    assert not gone, f"no longer in the code, drop from ALLOWED: {gone}"


def test_each_reason_is_one_of_the_classes():
    for site, (kind, why) in ALLOWED.items():
        assert kind in (T, P, K, R) and why, site


def test_the_modules_that_act_for_a_run_resolve_nothing_by_name_to_act_on():
    """Where the trusted side writes or binds for a run after planning (the copy-out,
    the export, the mount steps, Landlock's rules) no lookup by name is left but the
    kernel's own answers (`kernel`) and wording (`report`)."""
    acting = ("monitor/copy_out.py", "monitor/workdir_export.py", "isolation/landlock.py",
              "isolation/landlock_around.py", "isolation/beneath.py")
    for module, fn, call in call_sites():
        if module in acting:
            assert ALLOWED[(module, fn, call)][0] in (K, R), (module, fn, call)
