"""Sizes, durations and path variables."""
from __future__ import annotations

import os
import sys
import sysconfig

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import default_variables, parse_policy, python_paths, resolve
from sandbox.policy.units import format_duration, format_size, parse_duration, parse_size
from sandbox.policy.variables import check_path_syntax, expand


@pytest.mark.parametrize("text,n", [
    (4096, 4096), ("4096", 4096), ("1K", 1024), ("1KiB", 1024), ("256MiB", 256 << 20),
    ("256M", 256 << 20), ("1G", 1 << 30), ("1gib", 1 << 30), ("2 GiB", 2 << 30), ("1.5K", 1536),
    ("10B", 10), ("1T", 1 << 40),
])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "x", "1.5", "1KB", "12kB", "-1", "0", 0, -5, True, 1.5, "1 K i B", None, [1]])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text,s", [
    (10, 10.0), (0.5, 0.5), ("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0),
    ("1.5h", 5400.0), ("3", 3.0), ("2 min", 120.0),
])
def test_durations(text, s):
    assert parse_duration(text) == s


@pytest.mark.parametrize("bad", ["", "soon", "10d", "1sec", "-1s", "0s", 0, -1, True, float("inf"), float("nan"), None])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("n,text", [(512 << 20, "512MiB"), (1 << 30, "1GiB"), (1000, "1000"), (1536, "1536")
                                    , (3 << 10, "3KiB")])
def test_format_size_round_trips(n, text):
    assert format_size(n) == text and parse_size(text) == n


@pytest.mark.parametrize("s,text", [(60.0, "1m"), (0.5, "500ms"), (90.0, "90s"), (7200.0, "2h"), (1.25, "1250ms")])
def test_format_duration_round_trips(s, text):
    assert format_duration(s) == text and parse_duration(text) == s


# -- variables ------------------------------------------------------------------------------

def test_python_paths_cover_this_interpreter():
    paths = python_paths()
    assert len(paths) == len(set(paths))
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        assert os.path.normpath(p) in paths
    for k in ("stdlib", "platstdlib", "purelib", "platlib"):
        assert any(sysconfig.get_paths()[k] == p or sysconfig.get_paths()[k].startswith(p + "/")
                   for p in paths)
    # both the configured executable directory and the real one (a venv's python is a symlink)
    assert os.path.dirname(sys.executable) in paths
    assert os.path.dirname(os.path.realpath(sys.executable)) in paths
    # the sandbox package itself, so the bootstrap can import it in the sandbox
    import sandbox.policy
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(sandbox.policy.__file__)))
    assert pkg in paths
    assert all(os.path.isabs(p) for p in paths)


def test_default_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    v = default_variables("work", "out", home="/home/someone")
    assert v["WORKDIR"] == str(tmp_path / "work") and v["OUTPUT"] == str(tmp_path / "out")
    assert v["HOME"] == "/home/someone" and v["PYTHON"] == python_paths()
    monkeypatch.setenv("HOME", "/h")
    assert default_variables("/w", "/o")["HOME"] == "/h"


def test_expand_multi_valued_and_normalised():
    vars_ = {"PYTHON": ["/usr", "/opt/py/"], "OUTPUT": "/out"}
    assert expand("${PYTHON}/lib", vars_) == ["/usr/lib", "/opt/py/lib"]
    assert expand("${OUTPUT}/x/./y", vars_) == ["/out/x/y"]
    with pytest.raises(PolicyError, match="'..'"):    # it would climb out of ${OUTPUT}
        expand("${OUTPUT}/../x", vars_)
    assert expand("/plain//path/", vars_) == ["/plain/path"]
    assert expand("${PYTHON}", {"PYTHON": ["/a", "/a/"]}) == ["/a"]


def test_expand_errors():
    with pytest.raises(PolicyError, match="no value"):
        expand("${OUTPUT}/x", {}, key="filesystem.write")
    with pytest.raises(PolicyError, match="relative"):
        expand("${WORKDIR}/x", {"WORKDIR": "rel"})
    with pytest.raises(PolicyError, match="nothing"):
        expand("${PYTHON}", {"PYTHON": []})


@pytest.mark.parametrize("path,ok", [
    ("/usr", True), ("${WORKDIR}", True), ("${WORKDIR}/a/${OUTPUT}", True), ("/a/*.py", True),
    ("usr", False), ("./x", False), ("~/x", False), ("${NOPE}/x", False), ("/a/${HOME", False),
    ("", False), ("/a\0b", False), ("$WORKDIR/x", False),
])
def test_path_syntax(path, ok):
    assert (check_path_syntax(path) is None) == ok


def test_resolve_policy():
    p = parse_policy('[filesystem]\nread = ["${PYTHON}", "/etc"]\nwrite = ["${OUTPUT}", "${OUTPUT}/"]\n'
                     'deny = ["${HOME}/.ssh"]\nexec = ["${WORKDIR}/bin"]\n')
    r = resolve(p, {"PYTHON": ["/usr", "/py"], "OUTPUT": "/o", "HOME": "/h", "WORKDIR": "/w"})
    assert r.filesystem.read == ("/usr", "/py", "/etc")
    assert r.filesystem.write == ("/o",)
    assert r.filesystem.deny == ("/h/.ssh",) and r.filesystem.exec == ("/w/bin",)
    assert resolve(r, {}) == r   # idempotent: nothing left to substitute
    with pytest.raises(PolicyError) as info:
        resolve(p, {"PYTHON": "/usr"})
    assert info.value.key in ("filesystem.write", "filesystem.deny", "filesystem.exec")
