"""Where policies named without a path are found.

A name such as `strict` (no `/`, no `.toml`) is looked up as `strict.toml` in
each directory of the search path, first hit wins:

  1. each directory of `$SANDBOX_POLICY_PATH` (colon-separated, in order);
  2. `$XDG_CONFIG_HOME/sandbox/policies` (default `~/.config/sandbox/policies`);
  3. the built-in policies: `policies/` next to the `sandbox` package (a source
     checkout or editable install), else `<sys.prefix>/share/sandbox/policies`
     (where a wheel's data files land).

So a user can shadow a built-in with a file of the same name; a shadowing file
may itself `extends = ["strict"]`: the lookup then skips the file asking and
finds the next `strict.toml` down the path instead of looping.
"""
from __future__ import annotations

import os
import sys

ENV_VAR = "SANDBOX_POLICY_PATH"


def builtin_dir() -> str:
    """The directory holding the built-in policies (may not exist in a broken install)."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # .../sandbox
    here = os.path.join(os.path.dirname(pkg), "policies")
    if os.path.isdir(here):
        return here
    installed = os.path.join(sys.prefix, "share", "sandbox", "policies")
    return installed if os.path.isdir(installed) else here


def user_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "sandbox", "policies")


def default_search_path() -> list[str]:
    """The search path in effect now (reads the environment on every call)."""
    dirs = [d for d in os.environ.get(ENV_VAR, "").split(":") if d]
    dirs.append(user_dir())
    dirs.append(builtin_dir())
    out: list[str] = []
    for d in dirs:
        d = os.path.abspath(os.path.expanduser(d))
        if d not in out:
            out.append(d)
    return out


def is_name(ref: str) -> bool:
    """True when `ref` is a policy *name* (looked up on the path), not a file path."""
    return "/" not in ref and not ref.endswith(".toml")


def find_policy(name: str, search_path: list[str] | None = None, *,
                skip: str | None = None) -> str | None:
    """The file `name` refers to, or None. `skip` (a real path) is passed over."""
    for d in (default_search_path() if search_path is None else search_path):
        candidate = os.path.join(d, name + ".toml")
        if os.path.isfile(candidate):
            if skip is not None and os.path.realpath(candidate) == skip:
                continue
            return candidate
    return None


def available_policies(search_path: list[str] | None = None) -> dict[str, str]:
    """name -> file for every policy on the path (first hit wins), for listings and errors."""
    found: dict[str, str] = {}
    for d in (default_search_path() if search_path is None else search_path):
        try:
            entries = sorted(os.listdir(d))
        except OSError:
            continue
        for e in entries:
            if e.endswith(".toml") and e[:-5] not in found:
                found[e[:-5]] = os.path.join(d, e)
    return found
