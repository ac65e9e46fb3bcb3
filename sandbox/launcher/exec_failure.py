"""Why a program could not be started, in one line that says what to change.

The sandboxee reports an exec failure with the errno the kernel gave inside
the view (``exec_error``); the child exits 127 (not found) or 126 (found,
cannot execute), as a shell does. Only the launcher knows the policy, so the
explanation is made here: the policy engine says whether the view lacks the
file (no read grant) or forbids running it (no exec grant), and the host says
whether the file exists at all. The host is only consulted for files the
caller named, so this never tells a program anything: it runs in the launcher,
after the sandbox is gone.
"""
from __future__ import annotations

import errno
import os
import shutil

from sandbox.launcher.hints import grant_target as _grant_dir
from sandbox.policy.model import Policy
from sandbox.protocol import ExecFailure


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def describe(err: ExecFailure, message: str, policy: Policy, env_path: str,
             workdir: str) -> str:
    """One line: what failed and what to change (`message`: the strerror text)."""
    from sandbox.policy import decide
    prog = err.program or err.path
    if err.searched:
        host = shutil.which(prog, path=env_path)
        if host is None:
            return f"{prog}: command not found on the sandbox's PATH ({env_path})"
        return (f"{prog}: not found in the sandbox: {host} exists on the host, but the policy "
                f"grants no read of it (add read = [{_quote(_grant_dir(host))}] "
                f"and exec = [{_quote(_grant_dir(host))}], or --exec {_grant_dir(host)})")
    path = os.path.normpath(os.path.join(workdir, err.path))
    where = _quote(_grant_dir(path))
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        if not os.path.exists(path):
            return f"{prog}: no such file"
        verdict = decide(policy, "read", path)
        if verdict.rule.startswith("private "):
            area = verdict.rule.split(" ", 1)[1]
            return (f"{prog}: not found in the sandbox: {area} there is the sandbox's own, "
                    f"and the policy grants no part of the host's {area} "
                    f"(add read = [{where}] and exec = [{where}], or --exec {_grant_dir(path)})")
        if not verdict.allowed:
            return (f"{prog}: not found in the sandbox: the policy grants no read of {path} "
                    f"(add read = [{where}] and exec = [{where}], or --exec {_grant_dir(path)})")
        return f"{prog}: not found in the sandbox ({message or 'ENOENT'})"
    if err.errno == errno.EACCES:
        if os.path.isdir(path):
            return f"cannot execute {prog}: it is a directory"
        if not decide(policy, "exec", path).allowed:
            return (f"cannot execute {prog}: the policy grants no exec under "
                    f"{_grant_dir(path)} (add exec = [{where}] or --exec {_grant_dir(path)})")
        if os.path.exists(path) and not os.access(path, os.X_OK):
            return f"cannot execute {prog}: the file is not executable (chmod +x {prog})"
        return f"cannot execute {prog}: permission denied"
    if err.errno == errno.ENOEXEC:
        return f"cannot execute {prog}: not an executable format (a script needs a #! line)"
    return f"cannot execute {prog}: {message or os.strerror(err.errno)}"
