"""Attack: a path the mount plan resolved is swapped for a symlink before the bind.

The plan (`mount_plan.mount_table`) resolves each rule on the host, possibly long
before the sandboxee mounts it (a warm fork server prepares it ahead of the
fork). A directory whose parent another party can write (a concurrent run
granted write on the work directory, say) can be replaced in that window by a
symlink to something no rule grants. Had the bind followed the path again, the
sandbox would see that target. Judged from the host: what the sandboxed code
could copy into its writable output, and the mounts it left there.

The mount layer opens every source and target with openat2(RESOLVE_NO_SYMLINKS)
(the plan's paths are symlink-free) and binds by descriptor, so a swap fails the
run closed instead (runc had this class: CVE-2021-30465).
"""
from __future__ import annotations

import errno
import os

import pytest

from layer_harness import run_layers
from sandbox.isolation import mount_plan
from sandbox.isolation.mount_steps import Step
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule

SECRET = "host secret the policy never granted"


def _reader(data: str, out: str):
    """In the sandbox: copy whatever the granted directory shows into the output."""
    def fn() -> list[str]:
        names = sorted(os.listdir(data))
        for name in names:
            try:
                with open(os.path.join(data, name)) as src, \
                        open(os.path.join(out, "copy-" + name), "w") as dst:
                    dst.write(src.read())
            except OSError:
                pass
        return names
    return fn


def _swap_after_plan(monkeypatch: pytest.MonkeyPatch, victim: str, target: str) -> None:
    """The plan is computed, then `victim` becomes a symlink to `target` (the forked
    sandboxee inherits the patched function)."""
    real_table = mount_plan.mount_table

    def table_then_swap(plan: FsPlan, *args: object) -> list[Step]:
        steps = real_table(plan, *args)
        os.rename(victim, victim + ".orig")
        os.symlink(target, victim)
        return steps
    monkeypatch.setattr(mount_plan, "mount_table", table_then_swap)


@pytest.mark.isolation
@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_source_swapped_for_a_symlink_between_plan_and_mount(tmp_path, monkeypatch, link):
    shared = tmp_path / "shared"            # writable by another party (not this run)
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "granted.txt").write_text("granted")
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "key").write_text(SECRET)
    out = tmp_path / "out"
    out.mkdir()
    data = str(shared / "data")
    _swap_after_plan(monkeypatch, data, str(secret) if link == "absolute" else "../private")
    r = run_layers(Policy(), _reader(data, str(out)), base=str(tmp_path), until="mounts",
                   fs_plan=FsPlan(rules=(FsRule(data), FsRule(str(out), write=True))))
    copied = {p.name: p.read_text() for p in out.iterdir()}
    assert SECRET not in copied.values(), copied
    assert not r["ok"], r                 # fails closed: the plan's object is gone
    assert r["error"].startswith("SetupError: mounts:") and "ELOOP" in r["error"], r["error"]


def test_mountpoints_are_never_made_through_a_symlink(tmp_path):
    """A planted link on the way to a mountpoint: ELOOP, and nothing made where it points
    (the mkdir -p of the view walks by descriptor, beneath its root)."""
    from sandbox.isolation import beneath
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "b").symlink_to(outside)                 # absolute, to the host
    (root / "a" / "c").symlink_to("../../outside")          # relative, climbing out
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for via in ("b", "c"):
            with pytest.raises(OSError) as exc:
                beneath.make_mountpoint(root_fd, f"/a/{via}/x/y", True)
            assert exc.value.errno == errno.ELOOP
            with pytest.raises(OSError) as exc:
                beneath.make_mountpoint(root_fd, f"/a/{via}", True)
            assert exc.value.errno == errno.ELOOP
        fd = beneath.make_mountpoint(root_fd, "/a/d/e", False)
        os.close(fd)
    finally:
        os.close(root_fd)
    assert list(outside.iterdir()) == []
    assert (root / "a" / "d" / "e").is_file()
    with pytest.raises(OSError) as exc:
        beneath.open_source(str(root / "a" / "b"))
    assert exc.value.errno == errno.ELOOP
