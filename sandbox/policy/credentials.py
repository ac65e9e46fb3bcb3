"""Well-known credential stores, denied wherever a granted tree contains them.

Run from a home directory, a policy granting ``${WORKDIR}`` would hand the
program ``~/.ssh/id_*``, ``~/.aws/credentials`` and the like. So `resolve`
adds a deny rule for every store below every *home* that a grant reaches
(the store lies inside a granted tree, or a grant lies inside the store),
unless the policy opts back in with ``[filesystem] allow_credentials``
(store names from `STORES`, or ``"*"`` for all of them). firejail's
``disable-common.inc`` is the model.

A home is ``${HOME}``, ``${WORKDIR}`` (a project directory holds ``.npmrc``
and ``.git-credentials`` too), and each passwd entry's home directory that
exists and is owned by that user (so system accounts whose "home" is ``/bin``
or ``/`` do not count). The denies are literal paths of stores that exist
when the run starts: the mount layer masks them (a mask cannot be removed,
renamed over or unlinked), Landlock never sees them granted, and `decide`
names them ``credentials: <path>`` so ``sandbox policy explain`` says why.
A store that does not exist has nothing to read; denying it anyway would
make the monitor guard (broker) every open in a writable home, and
creating one needs a write grant on the home, which the policy gave.
"""
from __future__ import annotations

import os
import pwd
import stat
from typing import Iterable, Mapping, Sequence

# Relative to a home. Directories cover their whole subtree.
STORES: tuple[str, ...] = (
    ".ssh", ".gnupg", ".password-store", ".local/share/keyrings",
    ".aws", ".azure", ".config/gcloud", ".kube", ".docker/config.json",
    ".netrc", ".git-credentials", ".config/git/credentials", ".config/gh", ".config/hub",
    ".pgpass", ".my.cnf", ".npmrc", ".yarnrc.yml", ".pypirc", ".gem/credentials",
    ".cargo/credentials", ".cargo/credentials.toml", ".terraform.d/credentials.tfrc.json",
    ".vault-token", ".s3cfg", ".boto", ".config/rclone",
)
ALL = "*"

_PASSWD: dict[tuple[int, int], tuple[str, ...]] = {}


def _passwd_homes() -> tuple[str, ...]:
    """Homes of passwd entries that exist and belong to their user (cached per passwd file)."""
    try:
        st = os.stat("/etc/passwd")
        key = (st.st_mtime_ns, st.st_ino)
    except OSError:
        key = (0, 0)
    hit = _PASSWD.get(key)
    if hit is not None:
        return hit
    found: list[str] = []
    for pw in pwd.getpwall():
        home = pw.pw_dir
        if not home or not home.startswith("/") or os.path.normpath(home) == "/":
            continue
        try:
            hs = os.stat(home)
        except OSError:
            continue
        if stat.S_ISDIR(hs.st_mode) and hs.st_uid == pw.pw_uid:
            found.append(os.path.normpath(home))
    _PASSWD.clear()
    _PASSWD[key] = tuple(dict.fromkeys(found))
    return _PASSWD[key]


def homes(variables: Mapping[str, object]) -> list[str]:
    out: list[str] = []
    for name in ("HOME", "WORKDIR"):
        v = variables.get(name)
        if isinstance(v, str) and v.startswith("/") and os.path.normpath(v) != "/":
            out.append(os.path.normpath(v))
    out += _passwd_homes()
    return list(dict.fromkeys(out))


def _related(a: str, b: str) -> bool:
    """Is one of the two paths inside (or equal to) the other?"""
    if a == "/" or b == "/":
        return True
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def check_names(names: Iterable[str]) -> str | None:
    """Why `names` is not a valid allow_credentials list, or None."""
    for n in names:
        if n != ALL and n not in STORES:
            return (f"unknown credential store {n!r} (known: {', '.join(STORES)}, "
                    f"or \"{ALL}\" for all)")
    return None


def denies(grants: Sequence[str], variables: Mapping[str, object],
           allowed: Iterable[str] = ()) -> list[str]:
    """Deny paths for the stores under every home that one of `grants` (concrete
    paths or globs) reaches, minus the stores the policy opted back in."""
    from sandbox.policy import globs
    allowed = set(allowed)
    if ALL in allowed:
        return []
    stores = [s for s in STORES if s not in allowed]
    roots = [globs.static_prefix(g) if globs.is_glob(g) else g for g in grants]
    out: list[str] = []
    for home in homes(variables):
        if not any(_related(home, r) for r in roots):
            continue
        for s in stores:
            path = home.rstrip("/") + "/" + s
            if os.path.lexists(path) and any(_related(path, r) for r in roots):
                out.append(path)
    return list(dict.fromkeys(out))


def store_of(path: str) -> str | None:
    """The store a deny path names (for the rule text), or None."""
    for s in STORES:
        if path.endswith("/" + s):
            return s
    return None
