"""A user of the public API, type-checked by tests/test_public_api.py with
`mypy --strict`. Not collected by pytest (no test_ prefix); never run."""
from __future__ import annotations

import threading
from typing import assert_type

import sandbox
from sandbox import (ActionContext, Launcher, Policy, RunHandle, RunResult, Status, Workflow,
                     load_policy, load_workflow, run_parallel)


def use() -> None:
    with Launcher(audit_db="/tmp/audit.sqlite", max_concurrent=4) as launcher:
        assert_type(launcher, Launcher)
        result = launcher.spawn(["echo", "hi"], policy="strict", timeout=10.0)
        assert_type(result, RunResult)
        assert_type(result.status, Status)
        assert_type(result.exit_code, int | None)
        handle = launcher.start(["sleep", "60"])
        assert_type(handle, RunHandle)
        assert_type(handle.run_id, str)
        assert_type(handle.pid, int | None)
        handle.cancel()
        done: RunResult = handle.wait(timeout=5.0)
        assert_type(handle.result(), RunResult | None)
        if done.status is Status.CANCELLED:
            print(done.reason)
        wf: Workflow = load_workflow("wf.json")
        results = run_parallel(launcher, wf, [1, 2], concurrency=2, cancel=threading.Event())
        assert_type(results, list[RunResult])
    policy: Policy = load_policy("strict")
    print(policy.limits.wall, sandbox.__version__)


def action(ctx: ActionContext) -> None:
    ctx.store.put("k", 1)
