"""A program the policy will not let run is never skipped silently (issue 13.7).

bash (and `command -v`, `[ -x ]`, Python's shutil.which) asks access(X_OK)
before it runs a program found on PATH. On a noexec area (strict's private
/tmp, scratch_exec = false) the kernel says EACCES, so bash moved on down PATH
and an activated venv silently ran the *system* pip. Under an audit of every
lookup (`[audit] files = "all"`, strict) the monitor answers such an
access(X_OK) of an executable regular file where the policy refuses exec with
"yes": bash then picks the venv's pip, its exec fails with EACCES ("Permission
denied", exit 126), and the result's hint names the policy key.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.isolation

VENV = "python3 -m venv /tmp/v && . /tmp/v/bin/activate && command -v pip && "


def test_an_activated_venv_on_a_noexec_tmp_fails_loudly(launcher):
    r = launcher.spawn(["bash", "-c", VENV + "pip --version"], policy="strict")
    assert r.stdout.splitlines()[:1] == ["/tmp/v/bin/pip"], (r.stdout, r.stderr, r.reason)
    assert r.exit_code == 126 and "Permission denied" in r.stderr, (r.exit_code, r.stderr)
    assert any("scratch_exec" in h and "/tmp/v/bin/pip" in h for h in r.hints), r.hints


def test_access_stays_honest_for_what_could_not_run_anyway(launcher):
    """Only the policy's refusal is lifted from the answer: a file without an x bit,
    a missing one, and a directory get the kernel's own answer."""
    r = launcher.spawn(["bash", "-c", "touch /tmp/plain && mkdir /tmp/d && "
                        "for f in /tmp/plain /tmp/missing /tmp/d; do "
                        "[ -x $f ] && echo $f:x || echo $f:-; done"], policy="strict")
    assert r.stdout.split() == ["/tmp/plain:-", "/tmp/missing:-", "/tmp/d:x"], (r.stdout, r.stderr)


def test_an_executable_area_is_untouched(launcher):
    r = launcher.spawn(["bash", "-c", VENV + "pip --version >/dev/null && echo ran"],
                       policy="default")
    assert r.stdout.split() == ["/tmp/v/bin/pip", "ran"], (r.stdout, r.stderr)
