"""GoStage's `examples/spawn_process`, sandboxed: `sandbox demo spawn_process`.

The parent spawns a child that reports its PID, parent PID and hostname into
the store, logs through IPC, processes the items of its initial store, and
writes a file into the run's output directory. The parent then verifies each
of those facts and prints a verification summary.

In GoStage the child's parent PID equals the parent's PID. Here the child is
PID 1 of its own PID namespace, so it sees its parent as 0 (outside the
namespace); the matching-parent check is done from the host side instead:
the monitor that forked the sandbox reports its own parent, which must be
this launcher or the launcher's fork server.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from sandbox.workflow import ActionContext, Workflow, action

WORKFLOW: dict[str, Any] = {
    "id": "spawn-process-demo",
    "name": "Spawn process demo",
    "tags": ["demo", "gostage:spawn_process"],
    "policy": "spawn_process",
    "imports": ["sandbox.demos.spawn_process"],
    "store": {"items": [1, 2, 3, 4, 5], "greeting": "hello from the parent"},
    "stages": [
        {"id": "identify", "actions": ["demo.report_process"]},
        {"id": "process", "store": {"multiplier": 10}, "actions": ["demo.process_items"]},
        {"id": "output", "actions": ["demo.write_report"]},
    ],
}


@action("demo.report_process")
def report_process(ctx: ActionContext) -> None:
    ctx.store.put("child_pid", os.getpid())
    ctx.store.put("child_ppid", os.getppid())
    ctx.store.put("child_hostname", socket.gethostname())
    ctx.logger.info("child started", extra={"pid": os.getpid()})


@action("demo.process_items")
def process_items(ctx: ActionContext) -> None:
    items = ctx.store.get_list("items") or []
    factor = ctx.store.get_int("multiplier")
    processed = [i * factor for i in items]
    ctx.store.put("processed", processed)
    ctx.store.put("total", sum(processed))
    ctx.send("progress", {"done": len(items), "of": len(items)})
    ctx.logger.info(f"processed {len(items)} items")


@action("demo.write_report")
def write_report(ctx: ActionContext) -> None:
    if ctx.output_dir is None:
        raise RuntimeError("demo.write_report needs an output directory")
    path = Path(ctx.output_dir) / "report.txt"
    path.write_text(f"total={ctx.store.get_int('total')}\n", encoding="utf-8")
    ctx.store.put("report_file", str(path))
    ctx.logger.info("report written", extra={"path": str(path)})


def _descends(pids: dict[str, int], launcher: int, server: int | None) -> bool:
    """The monitor is this launcher's child, or the child of its fork server."""
    parent = pids.get("monitor_parent")
    if parent == launcher:
        return True
    return parent is not None and parent == server and _ppid(server) == launcher


def _lineage(pids: dict[str, int], launcher: int) -> str:
    monitor, parent = pids.get("monitor"), pids.get("monitor_parent")
    if parent == launcher:
        return f"monitor {monitor} is a child of this launcher ({launcher})"
    return (f"monitor {monitor} has parent {parent} (the fork server), whose parent is "
            f"{_ppid(parent)} (this launcher: {launcher})")


def _ppid(pid: int | None) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def run_demo(out=print) -> bool:
    """Spawn, verify, print the summary. Returns True when every check passed."""
    from sandbox.launcher.launcher import Launcher
    progress: list[Any] = []
    launcher = Launcher()
    launcher.on("progress", lambda msg, info: progress.append(msg.payload))
    result = launcher.spawn(Workflow.from_dict(WORKFLOW))
    s = result.store
    me = os.getpid()
    report = Path(result.output_dir or "/nonexistent") / "report.txt"
    checks = [
        ("run finished ok", result.status == "ok", f"{result.status} {result.reason}".strip()),
        ("child has a different PID", s.get("child_pid") not in (None, me),
         f"child {s.get('child_pid')} (PID 2 of its namespace), parent {me}"),
        ("child's parent is the sandbox's init (PID 1)", s.get("child_ppid") == 1,
         f"getppid() in the child = {s.get('child_ppid')}"),
        ("the sandbox descends from this launcher", _descends(result.pids, me, launcher.forkserver_pid),
         _lineage(result.pids, me)),
        ("child has its own hostname", s.get("child_hostname") == "sandbox"
         and socket.gethostname() != "sandbox", f"{s.get('child_hostname')!r}"),
        ("items processed, ints kept", s.get("processed") == [10, 20, 30, 40, 50]
         and type(s.get("total")) is int, f"processed={s.get('processed')} total={s.get('total')!r}"),
        ("store updates synced back", {"child_pid", "processed", "total", "report_file"}
         <= set(result.changed_keys), f"changed: {', '.join(result.changed_keys)}"),
        ("logs arrived over IPC", len(result.logs) >= 3, f"{len(result.logs)} log records"),
        ("custom message handled", progress == [{"done": 5, "of": 5}], f"{progress}"),
        ("output file written", report.is_file() and report.read_text() == "total=150\n",
         str(report)),
    ]
    out(f"spawn_process demo: run {result.run_id} under policy {result.policy!r}, "
        f"{result.wall_time * 1000:.0f} ms, layers: {', '.join(result.layers)}")
    for name, ok, detail in checks:
        out(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    passed = sum(ok for _, ok, _ in checks)
    out(f"verification: {passed}/{len(checks)} checks passed")
    return passed == len(checks)
