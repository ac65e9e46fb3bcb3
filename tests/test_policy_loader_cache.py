"""The launcher's policy cache never serves a stale policy."""
from __future__ import annotations

import os
import time

from sandbox.policy.loader import load_policy_cached


def _touch_later(path, text):
    st = os.stat(path)
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_cache_hit_is_the_same_object_and_edits_are_seen(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('[network]\nmode = "loopback"\n')
    top = tmp_path / "top.toml"
    top.write_text('extends = ["base.toml"]\n[limits]\nprocesses = 5\n')
    a = load_policy_cached(str(top))
    assert load_policy_cached(str(top)) is a
    _touch_later(top, 'extends = ["base.toml"]\n[limits]\nprocesses = 6\n')
    b = load_policy_cached(str(top))
    assert b.limits.processes == 6
    # a change in a file it extends is seen too
    _touch_later(base, '[network]\nmode = "none"\n')
    assert load_policy_cached(str(top)).network.mode == "none"


def test_new_file_on_the_search_path_is_seen(tmp_path):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir(), d2.mkdir()
    (d2 / "p.toml").write_text('[network]\nmode = "loopback"\n')
    assert load_policy_cached("p", search_path=[str(d1), str(d2)]).network.mode == "loopback"
    time.sleep(0.01)
    (d1 / "p.toml").write_text('[network]\nmode = "none"\n')
    assert load_policy_cached("p", search_path=[str(d1), str(d2)]).network.mode == "none"
