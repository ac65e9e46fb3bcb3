"""build_plan: globs expanded on the host, rights merged, denied paths masked."""
from __future__ import annotations

import os

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import build_plan, decide, default_variables, expand_glob, load_policy, parse_policy, resolve
from sandbox.policy.plan import FsPlan


def tree(root, *paths):
    for p in paths:
        full = root / p
        if p.endswith("/"):
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text("x")


def plan_of(text: str, root) -> FsPlan:
    text = text.replace("@", str(root))
    return build_plan(resolve(parse_policy(text), {"OUTPUT": f"{root}/out", "WORKDIR": f"{root}/work"}))


def rules(plan: FsPlan, root) -> dict[str, str]:
    out = {}
    for r in plan.rules:
        flags = ("r" if r.read else "-") + ("w" if r.write else "-") + ("x" if r.exec else "-")
        out[r.path.replace(str(root), "@")] = flags
    return out


def test_literal_rules_merged_parents_first(tmp_path):
    tree(tmp_path, "a/b/c/", "out/", "work/", "bin/")
    plan = plan_of("""
        [filesystem]
        read = ["@/a", "@/work"]
        write = ["${OUTPUT}", "@/a/b"]
        exec = ["@/bin", "@/a"]
    """, tmp_path)
    assert rules(plan, tmp_path) == {"@/a": "r-x", "@/a/b": "rwx", "@/bin": "r-x", "@/out": "rw-",
                                     "@/work": "r--"}
    paths = [r.path for r in plan.rules]
    assert paths == sorted(paths, key=lambda p: p.split("/"))   # parents first
    a = next(r for r in plan.rules if r.path == f"{tmp_path}/a")
    assert "filesystem.read: " in a.rule and "filesystem.exec: " in a.rule


def test_child_inherits_enclosing_rights(tmp_path):
    tree(tmp_path, "data/ro/", "data/x/")
    plan = plan_of('[filesystem]\nwrite = ["@/data"]\nread = ["@/data/ro"]\nexec = ["@/data/x"]\n', tmp_path)
    # /data/ro adds nothing to /data (rw) and is dropped; /data/x adds exec and keeps write
    assert rules(plan, tmp_path) == {"@/data": "rw-", "@/data/x": "rwx"}


def test_missing_paths_are_dropped_but_decided(tmp_path):
    tree(tmp_path, "here/")
    pol = resolve(parse_policy(f'[filesystem]\nread = ["{tmp_path}/here", "{tmp_path}/gone"]\n'), {})
    plan = build_plan(pol)
    assert [r.path for r in plan.rules] == [f"{tmp_path}/here"]
    assert decide(pol, "read", f"{tmp_path}/gone/x").allowed   # the verdict still follows the rule


def test_globs_expand_on_host(tmp_path):
    tree(tmp_path, "srv/a/public/", "srv/b/public/", "srv/c/private/", "srv/.hidden/public/",
         "data/1/x.csv", "data/1/2/y.csv", "data/z.csv", "data/n.txt", "data/deep/a/b/c/w.csv")
    plan = plan_of('[filesystem]\nread = ["@/srv/*/public", "@/data/**/*.csv"]\n', tmp_path)
    assert set(rules(plan, tmp_path)) == {
        "@/srv/a/public", "@/srv/b/public", "@/srv/.hidden/public",
        "@/data/1/x.csv", "@/data/1/2/y.csv", "@/data/z.csv", "@/data/deep/a/b/c/w.csv"}


def test_expand_glob_forms(tmp_path):
    tree(tmp_path, "a/x/", "a/y/z/", "a/f", "k/ab", "k/ac", "k/b")
    t = str(tmp_path)
    assert expand_glob(f"{t}/a/**") == [f"{t}/a/f", f"{t}/a/x", f"{t}/a/y"]
    assert expand_glob(f"{t}/a/**/z") == [f"{t}/a/y/z"]
    assert expand_glob(f"{t}/k/a?") == [f"{t}/k/ab", f"{t}/k/ac"]
    assert expand_glob(f"{t}/k/[!a]*") == [f"{t}/k/b"]
    assert expand_glob(f"{t}/a/y**") == [f"{t}/a/y", f"{t}/a/y/z"]
    assert expand_glob(f"{t}/nothing/*") == []


def test_glob_budget(tmp_path):
    tree(tmp_path, *[f"d/{i}/" for i in range(30)])
    with pytest.raises(PolicyError, match="narrow"):
        expand_glob(f"{tmp_path}/d/**/x", limit=10)


def test_masks_are_existing_denied_paths_inside_rules(tmp_path):
    tree(tmp_path, "etc/shadow", "etc/passwd", "etc/ssh/host_key", "etc/ssh/host_key.pub",
         "etc/ssh/config", "out/.git/HEAD", "elsewhere/secret")
    plan = plan_of("""
        [filesystem]
        read = ["@/etc"]
        write = ["${OUTPUT}"]
        deny = ["@/etc/shadow", "@/etc/ssh/*key*", "${OUTPUT}/.git", "@/elsewhere/secret",
                "@/etc/nonexistent", "@/etc/ssh"]
    """, tmp_path)
    t = str(tmp_path)
    # /etc/ssh covers the key files: only the outermost mask is listed
    assert list(plan.masks) == [f"{t}/etc/shadow", f"{t}/etc/ssh", f"{t}/out/.git"]


def test_denied_rule_paths_are_dropped(tmp_path):
    tree(tmp_path, "home/u/proj/", "home/u/.ssh/")
    plan = plan_of('[filesystem]\nread = ["@/home/u/proj", "@/home/u/.ssh"]\ndeny = ["@/home/u/.ssh"]\n',
                   tmp_path)
    assert list(rules(plan, tmp_path)) == ["@/home/u/proj"] and plan.masks == ()
    plan2 = plan_of('[filesystem]\nread = ["@/home/u/proj"]\ndeny = ["@/home"]\n', tmp_path)
    assert plan2.rules == ()


def test_sandbox_areas_are_not_rules(tmp_path):
    pol = resolve(parse_policy('[filesystem]\nread = ["/"]\n'), {})
    plan = build_plan(pol)
    assert [r.path for r in plan.rules] == ["/"]
    # a host path strictly inside /tmp is bound over the private /tmp, with its own rights
    tree(tmp_path, "out/", "in/")
    plan = plan_of('[filesystem]\nread = ["/", "@/in"]\nwrite = ["${OUTPUT}"]\n', tmp_path)
    got = rules(plan, tmp_path)
    assert got["/"] == "r--" and got["@/out"] == "rw-" and got["@/in"] == "r--"
    assert str(tmp_path).startswith("/tmp/")


def test_plan_agrees_with_decide(tmp_path):
    tree(tmp_path, "a/b/c/", "a/d/", "x/y/", "out/")
    pol = resolve(parse_policy(f"""
        [filesystem]
        read = ["{tmp_path}/a", "{tmp_path}/x/*"]
        write = ["{tmp_path}/out", "{tmp_path}/a/b"]
        exec = ["{tmp_path}/a/d"]
        deny = ["{tmp_path}/a/b/c"]
    """), {})
    plan = build_plan(pol)
    for r in plan.rules:
        assert decide(pol, "read", r.path).allowed == r.read
        assert decide(pol, "write", r.path).allowed == r.write
        assert decide(pol, "exec", r.path).allowed == r.exec
    for m in plan.masks:
        assert not decide(pol, "read", m).allowed


def test_tmp_size_carried(tmp_path):
    plan = plan_of('[filesystem]\ntmp_size = "8MiB"\n', tmp_path)
    assert plan.tmp_size == 8 << 20 and plan.rules == ()


@pytest.mark.parametrize("name", ["base", "strict", "build", "default", "spawn_process",
                                  "spawn_middleware"])
def test_builtin_plans_build_here(name, tmp_path):
    (tmp_path / "out").mkdir()
    pol = resolve(load_policy(name), default_variables(str(tmp_path), str(tmp_path / "out")))
    plan = build_plan(pol)
    paths = [r.path for r in plan.rules]
    assert "/usr" in paths and "/tmp" not in paths and "/etc" in paths
    assert all(os.path.exists(p) for p in paths)
    assert "/etc/shadow" in plan.masks
    assert FsPlan.from_dict(plan.to_dict()) == plan
    if name != "base":
        out = next(r for r in plan.rules if r.path == str(tmp_path / "out"))
        # default and build grant exec on ${WORKDIR}, which holds the output here
        assert out.write and out.exec == (name in ("default", "build"))
