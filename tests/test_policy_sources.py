"""The files a policy came from: a change is seen even when the stat is made to lie.

Judged from the host side: the file on disk against what the cache (and a warm pool,
sandbox.monitor.pools) still holds.
"""
from __future__ import annotations

import os

from sandbox.policy.loader import load_policy_cached, load_policy_sourced
from sandbox.policy.sources import SourceFile, digest, refresh


def _rewrite_keeping_stat(path, text):
    """Same size, same mtime (restored with utime): only ctime and the bytes differ."""
    st = os.stat(path)
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_edit_that_restores_size_and_mtime_is_seen(tmp_path):
    """The launcher's cache compared mtime, size and inode only: an edit of the same
    length with the mtime put back served the old policy (processes = 5)."""
    top = tmp_path / "top.toml"
    top.write_text("[limits]\nprocesses = 5\n")
    assert load_policy_cached(str(top)).limits.processes == 5
    _rewrite_keeping_stat(top, "[limits]\nprocesses = 7\n")
    assert load_policy_cached(str(top)).limits.processes == 7


def test_sources_name_every_file_read_with_its_hash(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('[network]\nmode = "loopback"\n')
    top = tmp_path / "top.toml"
    top.write_text('extends = ["base.toml"]\n[limits]\nprocesses = 5\n')
    _, sources = load_policy_sourced(str(top))
    files = {s.path: s for s in sources if not s.is_dir}
    assert set(files) == {str(top.resolve()), str(base.resolve())}
    import hashlib
    assert files[str(base.resolve())].sha256 == hashlib.sha256(base.read_bytes()).hexdigest()
    assert any(s.is_dir for s in sources)          # the search path's directories
    assert refresh(sources) == sources


def test_touch_keeps_the_sources_an_edit_does_not(tmp_path):
    top = tmp_path / "top.toml"
    top.write_text("[limits]\nprocesses = 5\n")
    _, sources = load_policy_sourced(str(top), search_path=[])
    st = os.stat(top)
    os.utime(top, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))   # touch: same bytes
    fresh = refresh(sources)
    assert fresh is not None and fresh[0].mtime_ns == st.st_mtime_ns + 5_000_000
    assert digest(fresh) == digest(sources)
    _rewrite_keeping_stat(top, "[limits]\nprocesses = 6\n")
    assert refresh(fresh) is None
    # replaced by another file (rename over it), or removed: changed too
    _, sources = load_policy_sourced(str(top), search_path=[])
    other = tmp_path / "new.toml"
    other.write_text(top.read_text())
    os.rename(other, top)
    assert refresh(sources) is not None            # same bytes under a new inode: same policy
    top.unlink()
    assert refresh(sources) is None


def test_a_search_directory_that_appears_is_a_change(tmp_path):
    d = tmp_path / "later"
    rec = SourceFile.of_dir(str(d))
    assert refresh((rec,)) == (rec,)
    d.mkdir()
    assert refresh((rec,)) is None
