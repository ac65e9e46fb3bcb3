"""Policies: the one source of truth for what a sandboxed action may do."""
from sandbox.policy.model import (AuditPolicy, EnvPolicy, FilesystemPolicy, Limits,
                                  NetworkPolicy, Policy, SyscallPolicy)

__all__ = ["AuditPolicy", "EnvPolicy", "FilesystemPolicy", "Limits", "NetworkPolicy",
           "Policy", "SyscallPolicy"]
