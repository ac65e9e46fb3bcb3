"""From what the monitor and the IPC reader saw to one RunResult status.

The order of the checks is the order of precedence: a setup error means
nothing ran; a violation or a timeout explains any exit status that follows
it; a limit explains a kill; only then does the exit code speak.
"""
from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

from sandbox import plain
from sandbox.launcher import hints
from sandbox.launcher import result as R
from sandbox.launcher.exec_failure import describe
from sandbox.launcher.session import SessionState
from sandbox.policy.model import Policy
from sandbox.protocol import AuditSummary, ExitReport

_SIGNAL_LIMITS: dict[int, str] = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file_size"}


def _decode_status(raw: int) -> tuple[int | None, int | None]:
    if raw < 0:
        return None, None
    if os.WIFSIGNALED(raw):
        return None, os.WTERMSIG(raw)
    if os.WIFEXITED(raw):
        return os.WEXITSTATUS(raw), None
    return None, None


def assemble(res: R.RunResult, st: SessionState, policy: Policy, mode: str, *,
             env_path: str = "", workdir: str = "/",
             argv: list[str] | None = None,
             env: dict[str, str] | None = None) -> R.RunResult:
    rep = st.monitor_report or ExitReport(monitor_lost=True)
    res.exit_code, res.signal = _decode_status(rep.status)
    res.cpu_time = rep.cpu_time
    res.monitor_cpu = rep.monitor_cpu
    res.monitor_peak_memory = rep.monitor_peak_memory
    res.max_rss = rep.max_rss
    res.layers = list(rep.layers)
    res.skipped_layers = dict(rep.skipped)
    res.limits_applied = dict(rep.limits_applied)
    for key in ("cpu", "open_files", "file_size"):
        if getattr(policy.limits, key) is not None:
            res.limits_applied.setdefault(key, "rlimit")
    if policy.limits.memory is not None:
        res.limits_applied.setdefault("memory", "rlimit")
    if policy.limits.processes is not None:
        res.limits_applied.setdefault("processes", "rlimit")
    if policy.limits.wall is not None:
        res.limits_applied.setdefault("wall", "monitor")
    res.pids = dict(rep.pids)
    res.timings = dict(rep.timings)
    res.warm = rep.prestarted
    res.pooled = rep.pooled
    res.view_prebuilt = rep.view_prebuilt
    res.clipped = dict(rep.clipped)
    res.denied_syscalls = dict(rep.denied_syscalls)
    res.output_error = rep.output_error
    if rep.output is not None:
        res.output = dataclasses.asdict(rep.output)
    res.logs, res.error = st.logs, st.error
    # a plain list from here: what the trusted side adds later (after_spawn hooks,
    # middleware.finish) is kept whatever the child filled the run's records with
    res.handler_errors = list(st.handler_errors)
    for name in ("handler_errors", "rejected"):
        dropped = getattr(st, name).dropped
        if dropped:
            res.clipped[name] = dropped
    res.messages = dict(st.counts)
    if st.child_result:
        res.bailed = bool(st.child_result.get("bailed"))
        res.bail_reason = st.child_result.get("bail_reason")
    if st.stdout is not None:
        res.stdout = st.stdout.decode(errors="replace")
    if st.stderr is not None:
        res.stderr = st.stderr.decode(errors="replace")
    if rep.audit is not None:
        res.audit = _audit_dict(rep.audit)
        res.denied = [dataclasses.asdict(d) for d in rep.denied]
        res.audit["denied_listed"] = len(res.denied)   # after the report's own clipping
    res.status, res.reason = _status(res, st, rep, policy, mode)
    if res.status == R.ERROR and rep.exec_failure is not None:
        res.reason = describe(rep.exec_failure, rep.exec_error or "", policy, env_path, workdir)
    res.hints = hints.make(res, policy, tmp_full=rep.tmp_full, workdir=workdir,
                           exec_failed=rep.exec_failure is not None,
                           workdir_full=rep.workdir_full, shm_full=rep.shm_full, argv=argv,
                           env=env)
    return res


def _audit_dict(summary: AuditSummary) -> dict[str, Any]:
    """RunResult.audit keeps its documented dict form; optional keys only when set."""
    out = plain.asdict(summary)
    out["top_paths"] = [list(pair) for pair in summary.top_paths]
    for key in ("errors_sample", "db_error"):
        if out[key] is None:
            del out[key]
    return out


def _status(res: R.RunResult, st: SessionState, rep: ExitReport, policy: Policy,
            mode: str) -> tuple[R.Status, str]:
    if rep.setup_error is not None:
        se = rep.setup_error
        text = se.message if se.layer in se.message else f"{se.layer}: {se.message}"
        inside = os.environ.get("SANDBOX_RUN_ID", "")
        if se.layer == "user_namespace" and inside:
            text += (f" (this launcher runs inside sandbox run {inside[:12]}, which makes no "
                     "namespaces of its own: a sandbox inside a sandbox is asked of the "
                     "outer launcher, ctx.spawn in a workflow action)")
        return R.SETUP_ERROR, text
    if rep.monitor_lost or rep.monitor_killed:
        return R.ERROR, "the monitor process ended unexpectedly" + _monitor_exit(rep)
    if rep.bad_report is not None:
        return R.ERROR, f"the monitor's report was malformed: {rep.bad_report}"
    if st.violation is not None:
        res.violation = st.violation
        return R.VIOLATION, f"IPC protocol violation: {st.violation['reason']}"
    if rep.violation is not None:
        res.violation = dataclasses.asdict(rep.violation)
        return R.VIOLATION, f"seccomp: forbidden syscall {rep.violation.syscall}"
    if rep.monitor_limit_hit:  # the tree made the trusted side work past its budget
        return R.LIMIT_EXCEEDED, "monitor"
    if rep.cpu_limit_hit:  # the monitor ended the tree at the sandbox's CPU budget
        return R.LIMIT_EXCEEDED, "cpu"
    if rep.timed_out:
        if rep.pids_limit_hit:
            return R.LIMIT_EXCEEDED, "processes"  # e.g. a fork bomb, ended by the wall clock
        return R.TIMEOUT, f"wall-clock limit of {policy.limits.wall:g}s reached; tree killed"
    if rep.cancelled:
        return R.CANCELLED, "cancelled by the caller"
    if rep.monitor_error is not None:
        return R.ERROR, f"the monitor failed: {rep.monitor_error}"
    if rep.oom_killed:
        return R.LIMIT_EXCEEDED, "memory"
    if rep.pids_limit_hit and (res.exit_code != 0 or res.signal is not None):
        return R.LIMIT_EXCEEDED, "processes"
    if rep.output_error is not None and (res.signal == signal.SIGPIPE or res.exit_code in (
            0, 128 + signal.SIGPIPE)):   # the cut's SIGPIPE, or a shell's word for it
        return R.ERROR, rep.output_error   # its output failed, not the program (finding H4)
    if res.signal is not None:
        if res.signal in _SIGNAL_LIMITS:
            return R.LIMIT_EXCEEDED, _SIGNAL_LIMITS[res.signal]
        if res.signal == signal.SIGSYS:
            return R.VIOLATION, "killed by SIGSYS (seccomp)"
        if res.signal == signal.SIGKILL and policy.limits.cpu is not None \
                and res.cpu_time >= policy.limits.cpu:
            return R.LIMIT_EXCEEDED, "cpu"
        return R.SIGNALED, f"killed by signal {res.signal} ({signal.Signals(res.signal).name})"
    if rep.exec_error is not None:
        return R.ERROR, f"cannot execute: {rep.exec_error}"
    # No status about a limit from the child's word (an `error` frame naming
    # MemoryError): limits are judged above, from the monitor's evidence only.
    if mode == "workflow":
        if st.child_result is None:
            return R.ERROR, f"the child ended without a result (exit code {res.exit_code})"
        if st.child_result.get("status") != "ok" or res.error:
            err = res.error or {}
            return R.ERROR, f"{err.get('type', 'error')}: {err.get('message', '')}".strip()
    if res.exit_code:
        return R.ERROR, f"exit code {res.exit_code}"
    if res.exit_code is None:
        return R.ERROR, "no exit status from the sandbox"
    return R.OK, ""


def _monitor_exit(rep: ExitReport) -> str:
    """How the monitor itself ended (its real status, from the fork server), if known."""
    code = rep.monitor_exit
    if code is None:
        return ""
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f" (killed by signal {-code}{name})"
    return f" (exit status {code})"
