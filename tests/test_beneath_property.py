"""Property: the kernel resolver (`sandbox.isolation.beneath`) stays inside or fails closed.

Over random directory trees holding random symlinks (absolute, relative, climbing
with ``..``, chains, loops, links to the outside), and random paths into them:

- `open_in_view` (RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS) either fails or returns a
  descriptor of something beneath the root, never outside;
- `make_mountpoint` / `make_dirs` never create anything outside the root, and what
  they return is beneath it;
- `open_dir` / `open_source` (RESOLVE_NO_SYMLINKS) succeed exactly when no
  component of the path is a symlink, and then name that very path.

The outside directory sits beside the root, so a link that escapes would land there.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile

from hypothesis import given, settings, strategies as st

from sandbox.isolation import beneath

NAMES = st.sampled_from(["a", "b", "c", "..", "."])
SEGMENT = st.sampled_from(["a", "b", "c"])


@st.composite
def trees(draw):
    """(dirs, links): directories to make and (place, link text) symlinks."""
    dirs = draw(st.lists(st.lists(SEGMENT, min_size=1, max_size=3).map("/".join),
                         max_size=6))
    text = st.one_of(
        st.lists(NAMES, min_size=1, max_size=4).map("/".join),            # relative, may climb
        st.lists(NAMES, min_size=0, max_size=3).map(lambda p: "/" + "/".join(p)),  # absolute
        st.just("../../outside"), st.just("/../outside"), st.just("OUTSIDE"))
    links = draw(st.lists(st.tuples(st.lists(SEGMENT, min_size=1, max_size=3).map("/".join),
                                    text), max_size=5))
    return dirs, links


def _build(top: str, dirs, links) -> tuple[str, str]:
    root, outside = os.path.join(top, "root"), os.path.join(top, "outside")
    os.makedirs(root)
    os.makedirs(outside)
    for d in dirs:
        try:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        except OSError:
            pass        # a link or file is in the way: fine, the tree is random
    for place, text in links:
        where = os.path.join(root, place)
        try:
            os.symlink(outside if text == "OUTSIDE" else text, where)
        except OSError:
            pass
    return root, outside


def _real(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _beneath(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _has_link(root: str, rel: str) -> bool:
    cur = root
    for part in [p for p in rel.split("/") if p]:
        cur = os.path.join(cur, part)
        if os.path.islink(cur):
            return True
    return False


@settings(derandomize=True, max_examples=150, deadline=None)
@given(trees(), st.lists(NAMES, min_size=0, max_size=5).map("/".join), st.booleans())
def test_the_resolver_stays_beneath_the_root_or_fails(tree, path, is_dir):
    top = tempfile.mkdtemp(prefix="beneath-")
    try:
        root, outside = _build(top, *tree)
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
        try:
            try:
                fd = beneath.open_in_view(root_fd, "/" + path)
            except OSError as exc:
                assert exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.EXDEV,
                                     errno.EAGAIN), exc
            else:
                try:
                    assert _beneath(_real(fd), root), (_real(fd), root)
                finally:
                    os.close(fd)
            if ".." not in path.split("/"):
                try:
                    fd = beneath.make_mountpoint(root_fd, "/" + path, is_dir)
                except OSError as exc:
                    assert exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST), exc
                else:
                    try:
                        assert _beneath(_real(fd), root), (_real(fd), root)
                    finally:
                        os.close(fd)
        finally:
            os.close(root_fd)
        assert os.listdir(outside) == [], "something was made outside the root"
        rel = "/".join(p for p in path.split("/") if p not in ("", ".", ".."))
        want = os.path.join(root, rel) if rel else root
        try:
            fd = beneath.open_source(want)
        except OSError as exc:
            assert exc.errno == errno.ENOENT or _has_link(root, rel), (want, exc)
        else:
            try:
                assert not _has_link(root, rel) and _real(fd) == want, (want, _real(fd))
            finally:
                os.close(fd)
    finally:
        shutil.rmtree(top)
