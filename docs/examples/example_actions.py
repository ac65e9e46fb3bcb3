"""Example actions for docs/examples/*.json.

Import this module (a workflow lists it under "imports") and its actions
register by name; each is also reachable as "example_actions:<function>" (the
workflow file's directory is on the child's import path).
Actions log through ctx.logger, never print: the sandboxee's stdout belongs
to the program, and log records travel to the parent as messages.
"""
from __future__ import annotations

import os
import socket

from sandbox.workflow import ActionContext, action


@action("hello")
def hello(ctx: ActionContext) -> dict:
    """Greets `params.who` (default "world") and stores the greeting."""
    who = ctx.params.get("who", "world")
    greeting = f"{ctx.store.get_str('greeting', 'hello')}, {who}!"
    ctx.logger.info(greeting, extra={"who": who})
    return {"message": greeting}


@action("report_process")
def report_process(ctx: ActionContext) -> None:
    """Puts this process's pid, ppid and hostname into the store.

    Inside a sandbox with its own PID and UTS namespaces these differ from
    the parent's view (pid 1 or small numbers, the sandbox hostname).
    """
    ctx.store.put("pid", os.getpid())
    ctx.store.put("ppid", os.getppid())
    ctx.store.put("hostname", socket.gethostname())
    ctx.logger.info("child process identified", extra={"pid": os.getpid()})


@action("bail_if_empty")
def bail_if_empty(ctx: ActionContext) -> None:
    """Ends the workflow early (successfully) if store[params.key] is missing or empty."""
    key = ctx.params.get("key", "items")
    if not ctx.store.get(key):
        ctx.bail(f"nothing to do: store key {key!r} is empty")


@action("sum_items")
def sum_items(ctx: ActionContext) -> dict:
    """Sums and squares the numbers in store[params.key] (default "items").

    Ints stay ints: [1, 2, 3] gives sum 6 and squares [1, 4, 9], not 6.0.
    """
    key = ctx.params.get("key", "items")
    items = ctx.store.get_list(key, [])
    for i, value in enumerate(items):
        if type(value) not in (int, float):
            raise TypeError(f"store key {key!r}[{i}]: expected a number, got {value!r}")
    ctx.logger.info(f"processing {len(items)} items")
    return {"sum": sum(items), "squares": [v * v for v in items], "count": len(items)}


@action("write_output_file")
def write_output_file(ctx: ActionContext) -> dict:
    """Writes a small report into ctx.output_dir and stores its path."""
    if ctx.output_dir is None:
        raise RuntimeError("write_output_file needs an output directory (ctx.output_dir)")
    name = ctx.params.get("filename", "report.txt")
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"filename must be a plain file name, got {name!r}")
    path = ctx.output_dir / name
    lines = [f"run {ctx.run_id}", f"sum {ctx.store.get('sum')}",
             f"squares {ctx.store.get('squares')}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ctx.logger.info("wrote output file", extra={"path": str(path)})
    return {"output_file": str(path)}
