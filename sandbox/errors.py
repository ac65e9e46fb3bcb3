"""Typed errors. Every message says what was wrong and, where it can, what to do.

Errors about *input* (a policy, a workflow, a CLI argument) derive from
`InputError`; the CLI turns them into a one-line message and exit code 2, and
nothing runs. Errors about the *machine* (a kernel layer that cannot be
applied) derive from `SetupError`; a run that meets one ends with status
`setup_error` instead of running weaker than its policy says.
"""
from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(SandboxError):
    """Bad input from the user: the CLI exits 2 and nothing runs."""


class PolicyError(InputError):
    """A policy file is malformed, unknown, or asks for something invalid.

    `file`, `key` and `line` locate the problem when they are known, so the
    message reads like a compiler error: ``policy.toml:12: limits.memory: ...``.
    """

    def __init__(self, message: str, *, file: str | None = None,
                 key: str | None = None, line: int | None = None) -> None:
        self.file, self.key, self.line, self.detail = file, key, line, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        elif line:
            where = f"line {line}: "
        super().__init__(f"{where}{key + ': ' if key else ''}{message}")


class OutputPathError(InputError):
    """A place for a run's products (--output, --result, --audit-log, the state
    directory) is unsafe or unusable: a link or directory another user controls,
    a system directory, a non-empty output. Nothing ran; `sandbox exec`/`run`
    exit 125."""


class WorkflowError(InputError):
    """A workflow definition is malformed or names an unknown action."""


class ProtocolError(SandboxError):
    """An IPC frame broke the protocol (bad length, bad JSON, wrong shape)."""


class SetupError(SandboxError):
    """A containment layer could not be applied on this machine.

    `layer` names it (``user_namespace``, ``landlock``, ``seccomp``, ...), so a
    RunResult can say exactly what was missing.
    """

    def __init__(self, layer: str, message: str) -> None:
        self.layer = layer
        super().__init__(f"{layer}: {message}")


class ZygoteGone(OSError):
    """The monitor host's zygote died (killed, OOM) before it answered: the host starts
    another (sandbox.monitor.zygote.Zygotes); ask again, with fresh sockets."""
