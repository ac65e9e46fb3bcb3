"""The mount table: a sandbox's view as ordered steps, computed from its plan and the host.

Pure with respect to mounts: it reads the host (each rule resolved by the kernel, the
symlinks met on the way) and mounts nothing, so the monitor host computes it before
the fork (`prepare`) and the pools key on it (sandbox/monitor/pool_key.py), and it is
tested without privileges. `sandbox.isolation.mounts` performs the steps; the order
they come in, and why, is that module's docstring.
"""
from __future__ import annotations

import errno
import os
import stat

from sandbox.isolation.mount_steps import Prepared, Step
from sandbox.policy.plan import FsPlan

ATTR_RDONLY, ATTR_NOSUID, ATTR_NODEV, ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
SPECIAL = ("/tmp", "/proc", "/dev")   # always the sandbox's own, never the host's
_MAX_LINKS = 40


def path_parts(path: str) -> tuple[str, ...]:
    """`path`'s components: sorting by them puts a directory right before what is in it."""
    return tuple(p for p in path.split("/") if p)


def under(path: str, top: str) -> bool:
    """Is `path` `top` or inside it (lexically: both are real paths here)?"""
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def links_on_the_way(path: str) -> list[tuple[str, str]]:
    """The symlinks met while resolving `path`, as (symlink-free location, link text)."""
    out: list[tuple[str, str]] = []
    parts, cur, i, hops = list(path_parts(path)), "/", 0, 0
    while i < len(parts):
        nxt = os.path.join(cur, parts[i])
        if os.path.islink(nxt):
            hops += 1
            if hops > _MAX_LINKS:
                break
            text = os.readlink(nxt)
            out.append((nxt, text))
            parts = list(path_parts(os.path.normpath(os.path.join(cur, text)))) + parts[i + 1:]
            cur, i = "/", 0
        else:
            cur, i = nxt, i + 1
    return out


def _effective(merged: dict[str, list[bool]]) -> dict[str, tuple[bool, bool, str]]:
    """Rights as a union over enclosing rules (as Landlock and the engine see them),
    and how each needed mount is made: "bind" (the host path), "overlay" (the
    copy-on-write work directory) or "rebind" (a part of the overlay bound onto
    itself with other flags, so it stays copy-on-write).

    A rule inside another bind already appears in the view (same host tree);
    it needs a bind of its own only when its effective rights differ from the
    nearest enclosing bind's. A special mount (/tmp, /proc, /dev) between the
    two cuts the chain: what is bound beneath it starts afresh. Beneath an
    overlay, a rule with a write grant of its own is the host's (an output
    directory inside the work directory), every other rule stays in the overlay.
    """
    out: dict[str, tuple[bool, bool, str]] = {}
    eff: dict[str, tuple[bool, bool, str]] = {}
    for real in sorted(merged, key=path_parts):
        cut = next((s for s in SPECIAL if under(real, s)), None)
        write, exe = merged[real][0], merged[real][1]
        cow = len(merged[real]) > 3 and merged[real][3]
        nearest = None
        for anc in eff:   # already sorted: later ancestors are nearer
            if anc != real and under(real, anc) and (cut is None or under(anc, cut)):
                write, exe = write or eff[anc][0], exe or eff[anc][1]
                nearest = anc
        if cow:
            how = "overlay"
        elif nearest is not None and eff[nearest][2] != "bind" and not merged[real][0]:
            how = "rebind"
        else:
            how = "bind"
        eff[real] = (write, exe, "overlay" if how == "rebind" else how)
        if nearest is None or eff[nearest] != eff[real]:
            out[real] = (write, exe, how)
    return out


def resolve(path: str) -> tuple[str, bool] | None:
    """(real path, is a directory), or None when `path` does not exist.

    The kernel resolves it (open O_PATH, then read the descriptor's magic link):
    four system calls instead of one lstat per component plus Python's
    `realpath` bookkeeping, which dominated the cost of `mount_table`.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:   # no /proc: resolve in Python
            real = os.path.realpath(path)
    finally:
        os.close(fd)
    return real, is_dir


def mount_table(plan: FsPlan, real_of: dict[str, str] | None = None) -> list[Step]:
    """The view as an ordered list of steps, computed from the plan and the host.
    `real_of` (filled when given): each bound rule's path -> its real path, the one
    place the plan meets the host's symlinks (Landlock's rules use it: `Prepared`)."""
    merged: dict[str, list[bool]] = {}   # real path -> [write, exec, is_dir]
    links: dict[str, str] = {}
    tmp_exec = plan.scratch_exec
    for rule in plan.rules:
        if rule.path in SPECIAL:
            tmp_exec |= rule.path == "/tmp" and rule.exec
            continue
        found = resolve(rule.path)
        if found is not None and rule.real and found[0] != rule.real:
            # The engine decided on this path when the plan was made, where it led to
            # rule.real; it leads elsewhere now: a component swapped for a link (or
            # moved) since. Binding the new target would grant what nothing decided.
            raise OSError(errno.ELOOP, "resolves elsewhere than when the plan was made "
                          f"({found[0]}, not {rule.real}): swapped for a link?", rule.path)
        if found is not None and real_of is not None:
            real_of[rule.path] = found[0]
        if found is None or found[0] in SPECIAL:
            continue
        real = found[0]
        if real != os.path.normpath(rule.path):
            links.update(links_on_the_way(rule.path))
        cur = merged.setdefault(real, [False, False, found[1], False])
        cur[0] |= rule.write
        cur[1] |= rule.exec
        cur[3] |= rule.cow
    keyed: list[tuple[tuple[str, ...], int, Step]] = [
        (path_parts("/tmp"), 1, Step("tmp", "/tmp", exec=tmp_exec)),
        (path_parts("/proc"), 1, Step("proc", "/proc")),
        (path_parts("/dev"), 1, Step("dev", "/dev")),
    ]
    output = _output_step(plan, merged)
    for real, (write, exe, how) in _effective(merged).items():
        if output is not None and under(real, output.path):
            continue   # the output is a fresh tmpfs: nothing of the host's is bound in it
        attrs = ATTR_NOSUID
        attrs |= 0 if under(real, "/dev") else ATTR_NODEV
        attrs |= 0 if exe else ATTR_NOEXEC
        attrs |= 0 if write else ATTR_RDONLY
        keyed.append((path_parts(real), 0, Step(how, real, real, merged[real][2], attrs)))
    for where, text in links.items():
        keyed.append((path_parts(where), 2, Step("link", where, text, False)))
    if output is not None:
        keyed.append((path_parts(output.path), 0, output))
    keyed.sort(key=lambda k: (k[0], k[1]))
    steps = [k[2] for k in keyed]
    masked: set[str] = set()
    for mask in plan.masks:
        found = resolve(mask)
        # Masks naming the same file (a symlink and its target) are applied once: a
        # second bind of the mask file would stack on the first for nothing.
        if output is not None and found is not None and under(found[0], output.path):
            continue   # nothing of the host's is inside the output tmpfs to hide
        if found is not None and found[0] not in masked:
            masked.add(found[0])
            steps.append(Step("mask", found[0], is_dir=found[1]))
    return steps


def _output_step(plan: FsPlan, merged: dict[str, list[bool]]) -> Step | None:
    """${OUTPUT} as a size-limited tmpfs, when the view holds it at all.

    Its rights are the union of the rules at or above it (as for a bind);
    rules beneath it bind nothing (the host directory is new and empty).
    The monitor copies it out, inert, when the run ends (`copy_out`).
    """
    found = resolve(plan.output) if plan.output else None
    if found is None or not found[1]:
        return None
    real = found[0]
    cut = next((s for s in SPECIAL if under(real, s)), None)
    covering = [r for r in merged if under(real, r) and (cut is None or under(r, cut))]
    if not covering or real in SPECIAL:
        return None
    write = any(merged[r][0] for r in covering)
    exe = any(merged[r][1] for r in covering)
    attrs = ATTR_NOSUID | ATTR_NODEV | (0 if exe else ATTR_NOEXEC) | (0 if write else ATTR_RDONLY)
    return Step("output", real, is_dir=True, attrs=attrs)


def prepare(plan: FsPlan) -> Prepared:
    """Compute the table ahead of the fork (e.g. in a warm monitor), for the context's
    `mount_table`: the one way it crosses the fork (issue 14: no module state does).

    In a freshly forked process every Python object touched costs a page
    copy, so the ~0.1 ms the table takes in a warm process becomes ~0.5 ms
    in the sandboxee. `build_view` uses a prepared table when the plan is equal.
    """
    real: dict[str, str] = {}
    return Prepared(plan, mount_table(plan, real), real)
