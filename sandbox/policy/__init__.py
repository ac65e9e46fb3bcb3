"""Policies: the one source of truth for what a sandboxed action may do.

    policy = load_policy("strict")                      # raw: ${VARIABLES} kept
    run_policy = resolve(policy, default_variables(workdir, output))
    decide(run_policy, "write", "/etc/passwd")          # Verdict(allowed=False, ...)
    plan = build_plan(run_policy)                       # FsPlan for the mount + Landlock layers

See docs/policy-reference.md for the format and the engine's semantics.
"""
from sandbox.policy.engine import OPERATIONS, Engine, Verdict, decide, engine_for
from sandbox.policy.loader import load_policy, parse_policy
from sandbox.policy.model import (AuditPolicy, EnvPolicy, FilesystemPolicy, Limits,
                                  NetworkPolicy, Policy, SyscallPolicy)
from sandbox.policy.planner import build_plan, expand_glob
from sandbox.policy.search import available_policies, default_search_path, find_policy
from sandbox.policy.variables import KNOWN_VARIABLES, default_variables, python_paths, resolve

__all__ = ["AuditPolicy", "EnvPolicy", "FilesystemPolicy", "Limits", "NetworkPolicy",
           "Policy", "SyscallPolicy",
           "load_policy", "parse_policy", "resolve", "default_variables", "python_paths",
           "KNOWN_VARIABLES", "decide", "Engine", "engine_for", "Verdict", "OPERATIONS",
           "build_plan", "expand_glob", "available_policies", "default_search_path", "find_policy"]
