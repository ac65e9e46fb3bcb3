"""Policy globs match in time linear in the path, and mean what they meant.

The attack (found by probing the landed main): a glob rule with several unbounded
wildcards, `/var/tmp/t/*a*a*a*a*a*a*a*a*a*a*a*ab` or `/usr/**/x*/**/x*/**/zz`, was
compiled to a backtracking regular expression. A deny rule is always narrower, so a
nested spawn or a tenant's inline policy may add one; matching it against a long
name then held the launcher (it plans the view), the shared monitor (every run it
serves) or the HTTP server for minutes. Judged from the host: the run with such a
rule ends normally with the rule applied, and the rule count is bounded at load.

What the linear matcher must keep is checked against the old translation to a
regular expression (kept here as the oracle) on random small globs and paths.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from sandbox.policy import globs
from sandbox.policy.glob_nfa import BitGlob

SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")


def _oracle_translate(pattern: str) -> str:
    """The regular expression globs.translate produced before the linear matcher."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                seg_start = i == 0 or pattern[i - 1] == "/"
                after = i + 2
                if seg_start and after < n and pattern[after] == "/":
                    out.append("(?:[^/]+/)*")
                    i = after + 1
                    continue
                if seg_start and after == n:
                    out.append("(?:[^/]+(?:/[^/]+)*)")
                    i = after
                    continue
                out.append(".*")
                i = after
                while i < n and pattern[i] == "*":
                    i += 1
                continue
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls = globs._class(pattern, i)
            if cls is None:
                out.append(re.escape(c))
                i += 1
            else:
                out.append(cls[0])
                i = cls[1]
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _oracle_root(pattern: str, path: str) -> str | None:
    """The longest leading part of `path` the glob names, ending where `path` ends or at
    a "/": the concrete rule path a rule's match is rooted at."""
    exact = re.compile(_oracle_translate(pattern), re.DOTALL)
    for i in range(len(path), -1, -1):
        if (i == len(path) or path[i] == "/") and exact.fullmatch(path[:i]):
            return path[:i]
    return None


TOKENS = ["a", "b", "/", "*", "**", "?", "[ab]", "[!a]", "[]a]", "[/]", "/**/", "/**", "["]
glob_text = st.lists(st.sampled_from(TOKENS), max_size=8).map("".join)
path_text = st.text(alphabet="ab/]", max_size=12)


@settings(max_examples=3000, deadline=None)
@given(glob_text, path_text)
def test_the_linear_matcher_names_what_the_regex_named(pattern, path):
    want = re.fullmatch(_oracle_translate(pattern), path, re.DOTALL) is not None
    assert (BitGlob(globs.items(pattern), subtree=False).fullmatch(path) is not None) == want
    assert (globs.compile_exact(pattern).fullmatch(path) is not None) == want


@settings(max_examples=3000, deadline=None)
@given(glob_text, path_text)
def test_a_rule_covers_the_same_paths_rooted_at_the_longest_match(pattern, path):
    root = _oracle_root(pattern, path)
    for matcher in (BitGlob(globs.items(pattern), subtree=True), globs.compile_rule(pattern)):
        m = matcher.fullmatch(path)
        assert (None if m is None else m.root) == root, (pattern, path, type(matcher))


def test_only_one_wildcard_loop_is_left_to_the_regex_engine():
    """The regex engine backtracks over its loops; with one loop there is nothing to
    combine, so each glob with two or more goes to the automaton."""
    assert type(globs.compile_rule("/home/*/.ssh")).__name__ == "_RegexGlob"
    assert type(globs.compile_rule("/a/**")).__name__ == "_RegexGlob"
    for many in ("/etc/ssh/*key*", "/usr/**/x*/**/zz", "/t/*a*a*ab", "/a/**/b/**"):
        assert isinstance(globs.compile_rule(many), BitGlob), many


def test_the_crafted_globs_match_long_paths():
    """The globs that backtracked for minutes, against the paths that made them: the
    automaton reads each character once, so these return at once."""
    deep = "/usr" + "/a" * 2000
    for pattern in ("/usr" + "/**/a*" * 30 + "/zz", "/usr/**" + "/*a" * 30 + "/**/zz"):
        assert globs.compile_rule(pattern).fullmatch(deep) is None
        assert globs.compile_rule(pattern).fullmatch(deep + "/zz") is not None
    name = "/t/" + "a" * 250
    rule = globs.compile_rule("/t/" + "*a" * 40 + "b")
    assert rule.fullmatch(name) is None and rule.fullmatch(name + "b") is not None


def test_a_rule_with_too_many_wildcards_is_refused_with_one_line(tmp_path):
    policy = tmp_path / "many.toml"
    policy.write_text('name = "many"\nextends = ["strict"]\n[filesystem]\n'
                      f'deny = ["/var/tmp/{"*a" * (globs.MAX_WILDCARDS + 1)}"]\n')
    r = subprocess.run([SANDBOX, "exec", "--policy", str(policy), "--", "/bin/true"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 125, r
    assert "wildcards in one glob" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.isolation
def test_a_backtracking_deny_rule_leaves_the_run_to_its_program(tmp_path):
    """The deny rule sits inside a writable tree, so the launcher plans around it and
    the monitor decides every open there against it. Before the fix this run never
    reached its program: the launcher matched the 200-character name for minutes."""
    tree = tmp_path / "tree"
    tree.mkdir()
    long_name, secret_name = "a" * 200, "a" * 100 + "b"
    (tree / long_name).write_text("fine\n")
    (tree / secret_name).write_text("secret\n")
    os.chmod(tmp_path, 0o755)
    policy = tmp_path / "redos.toml"
    policy.write_text('name = "redos"\nextends = ["strict"]\n[filesystem]\n'
                      f'write = ["{tree}"]\ndeny = ["{tree}/{"*a" * 12}b"]\n')
    r = subprocess.run([SANDBOX, "exec", "--policy", str(policy), "--timeout", "60", "--",
                        "/bin/sh", "-c", f"cat {tree}/{long_name}; cat {tree}/{secret_name}; "
                        "echo done"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r
    assert r.stdout == "fine\ndone\n", r
    assert "Permission denied" in r.stderr
