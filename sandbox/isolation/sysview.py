"""The parts of a normal system programs expect, added to the view by PID 1.

Run by the mount layer (mounts.py) inside the sandbox's user, mount and cgroup
namespaces, before the pivot. None of it shows the host beyond what the policy
already grants, and none of it is writable by the program:

- a private **/dev/pts** (`private_pts`): a *new* devpts instance
  (``newinstance``, ``ptmxmode=0666``) with ``/dev/ptmx -> pts/ptmx``, so
  ``pty.openpty()``, ``script`` and ``expect`` work. It holds only the ptys
  this sandbox creates, at most `PTY_MAX` (``max=``: ENOSPC beyond), so one
  sandbox cannot drain the pool all non-initial instances share; the host's
  ptys are in another instance. Under ``sandbox exec -t`` the run's one host
  pty is bound at /dev/console (mounts._bind_terminal), beside it.
- **/etc/passwd, /etc/group, /etc/hosts** (`etc_files`): copies of the host's
  files (which the policy already shows under /etc) in which the sandbox's user
  has HOME = identity.HOME_DIR and a usable shell, its gid has a name, and the
  sandbox's host name resolves to loopback. Written into the sandbox's own
  scratch tmpfs beside the view (mounts.scratch_at) and bound read-only over
  the view's files; the host's files are never written. Skipped for a file the
  policy does not show or denies (masked), and for one that is a symlink (its
  target would be resolved on the host).
- **HOME** (`home`): identity.HOME_DIR, made in the private /tmp, mode 0700.
- **/sys/fs/cgroup** (`cgroup_tree`): the sandbox's OWN cgroups, read-only.
  The stub joined the run's cgroups before it unshared the cgroup namespace,
  so that namespace's root is the run's cgroup: a cgroup filesystem mounted
  from inside shows that cgroup as its root (limits, usage, events) and
  nothing above or beside it, and /proc/self/cgroup says "/". Runtimes (the
  JVM, Go, .NET) then find their memory and pids limits. Only the controllers
  in which the run has a cgroup of its own are mounted (`ctx.cgroup_view`):
  another controller's namespace root would be the caller's cgroup, with its
  other children. Read-only, because cgroup v1 files are owned by the caller's
  uid, which is the program's: a writable mount would let it raise its own
  memory limit. The program cannot remount it (no capabilities, seccomp).
"""
from __future__ import annotations

import os
from typing import Callable

from sandbox.isolation import identity, libc

CGROUP_TOP = "/sys/fs/cgroup"
# The ptys one sandbox may hold at once (devpts `max=`). Every devpts instance but
# the host's first shares kernel.pty.max - kernel.pty.reserve (3072 by default)
# with no per-user share: without a bound one sandbox took all of them (probe 1,
# F4). 64 is far above what `script`, `expect`, tmux or a test runner's pexpect
# workers hold, and leaves the pool to about 48 such sandboxes at once.
PTY_MAX = 64
ETC_FILES = ("passwd", "group", "hosts")
_RO = libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC


def make_pts_points(dev: str) -> None:
    """Before /dev turns read-only: the mountpoint and the ptmx link."""
    os.makedirs(dev + "/pts", 0o755, exist_ok=True)
    if not os.path.lexists(dev + "/ptmx"):
        os.symlink("pts/ptmx", dev + "/ptmx")


def private_pts(dev: str) -> None:
    """After /dev turned read-only: a new devpts instance of this sandbox's own.
    No gid= option: the tty group is not mapped in the user namespace."""
    libc.mount("devpts", dev + "/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
               f"newinstance,ptmxmode=0666,mode=0620,max={PTY_MAX}")


def _masked(path: str, masks: tuple[str, ...]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in masks)


RESOLV_CONF = "nameserver 127.0.0.1\noptions attempts:2 timeout:2\n"


def etc_files(root: str, beside: str, masks: tuple[str, ...], uid: int, gid: int,
              hostname: str, setattr_: Callable[[str], None],
              resolver: bool = False) -> list[str]:
    """Bind the generated passwd, group and hosts over the view's; returns those bound.
    `resolver`: also a resolv.conf naming the monitor's DNS stub at 127.0.0.1
    (network mode "allowlist" with dns = true, sandbox/netproxy/dnsstub.py)."""
    who = identity.identity(uid, gid)
    done = []
    for name in ETC_FILES + (("resolv.conf",) if resolver else ()):
        host = "/etc/" + name
        target = root + host
        if (os.path.islink(target) or not os.path.isfile(target)
                or _masked(os.path.realpath(host), masks) or _masked(host, masks)):
            continue
        with open(host, encoding="utf-8", errors="replace") as f:
            text = f.read(4 << 20)
        if name == "passwd":
            text = identity.passwd_view(text, who)
        elif name == "group":
            text = identity.group_view(text, who)
        elif name == "hosts":
            text = identity.hosts_view(text, hostname)
        else:
            text = RESOLV_CONF
        src = os.path.join(beside, "view-" + name)
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        libc.mount(src, target, None, libc.MS_BIND)
        setattr_(target)
        done.append(host)
    return done


def home(root: str) -> None:
    """The private HOME in the private /tmp (unless a rule bound something there)."""
    target = root + identity.HOME_DIR
    if not os.path.lexists(target) and os.path.isdir(root + os.path.dirname(identity.HOME_DIR)):
        os.mkdir(target, 0o700)


def _mkdirs(root: str, path: str) -> bool:
    """Make `path` in the view, unless that would write into a bound host tree."""
    cur = root
    for part in path.strip("/").split("/"):
        cur = os.path.join(cur, part)
        if os.path.islink(cur):
            return False
        if not os.path.isdir(cur):
            try:
                os.mkdir(cur, 0o755)
            except OSError:
                return False
    return True


def cgroup_tree(root: str, controllers: tuple[str, ...]) -> list[str]:
    """Mount the run's own cgroups at /sys/fs/cgroup, read-only; returns what was mounted.

    Laid out as the host does: v1 controllers under /sys/fs/cgroup/<name> on a
    small read-only tmpfs, v2 ("unified") at /sys/fs/cgroup/unified beside them,
    or at /sys/fs/cgroup itself when it is alone. A controller the kernel will
    not mount alone here (co-mounted on the host) is left out: less to see."""
    top = root + CGROUP_TOP
    if not _mkdirs(root, CGROUP_TOP) or not controllers:
        return []   # no cgroup of its own: an empty directory, as on a host without cgroups
    mounted: list[str] = []
    if controllers == ("unified",):
        try:
            libc.mount("cgroup2", top, "cgroup2", _RO)
            return ["unified"]
        except OSError:
            return []
    libc.mount("tmpfs", top, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
               "mode=0755,size=16k,nr_inodes=32")
    for name in controllers:
        where = f"{top}/{name}"
        os.mkdir(where, 0o755)
        try:
            if name == "unified":
                libc.mount("cgroup2", where, "cgroup2", _RO)
            else:
                libc.mount("cgroup", where, "cgroup", _RO, name)
            mounted.append(name)
        except OSError:
            os.rmdir(where)
    libc.mount(None, top, None, libc.MS_REMOUNT | _RO, "mode=0755,size=16k,nr_inodes=32")
    return mounted


def is_cgroup_path(path: str) -> bool:
    return path == CGROUP_TOP or path.startswith(CGROUP_TOP + "/")

