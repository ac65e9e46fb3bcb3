"""`sandbox runs --server URL ACTION`: the same verbs on a service's runs.

list, show, logs as for the local history; cancel, download, audit and events
exist only on a service. Everything printed that the run or the server chose
(commands, reasons, file names, audit paths) goes through `printable`;
`logs` prints the captured stdout and stderr as they are, like the local one.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import Any

from sandbox.cli import remote
from sandbox.printable import printable


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _command(view: Any) -> str:
    if view.kind == "exec" and view.argv:
        return shlex.join(view.argv)
    return f"workflow {view.workflow or '?'}"


def list_runs(args: argparse.Namespace) -> int:
    from sandbox.errors import InputError
    if args.n < 1:
        raise InputError(f"-n must be at least 1, got {args.n}")
    with remote.client(args) as c:
        items: list[Any] = []
        cursor: str | None = None
        while len(items) < args.n:
            page = c.list(status=args.status, limit=min(500, args.n - len(items)), cursor=cursor)
            items.extend(page.items)
            cursor = page.next_cursor
            if not cursor or not page.items:
                break
    if args.json:
        print(json.dumps([v.model_dump(mode="json") for v in items], indent=2))
    elif args.quiet:
        for v in items:
            print(printable(v.id))
    else:
        for v in items:
            res = v.result or {}
            code = f"signal {res['signal']}" if res.get("signal") is not None else \
                ("" if res.get("exit_code") is None else f"exit {res['exit_code']}")
            print(printable(f"{v.id[:16]:<16}  {_when(v.created_at)}  {v.status:<14} {code:<10} "
                            f"{v.token:<10} {v.policy or '-':<10} {_command(v)[:60]}"))
    return 0


def show(args: argparse.Namespace) -> int:
    with remote.client(args) as c:
        v = c.get(args.run_id)
    if args.json:
        print(remote.dump_json(v))
        return 0
    res = v.result or {}
    lines = [f"run {v.id}", f"  command:  {_command(v)}",
             f"  status:   {v.status}" + (f" ({v.reason})" if v.reason else ""),
             f"  token:    {v.token}   policy {v.policy or '-'}   host {v.host}",
             f"  queued:   {_when(v.queued_at)}   started {_when(v.started_at)}   "
             f"finished {_when(v.finished_at)}",
             f"  attempts: {v.attempts} (retries allowed: {v.retries})"]
    if res.get("exit_code") is not None:
        lines.append(f"  exit:     {res['exit_code']}")
    if res.get("signal") is not None:
        lines.append(f"  signal:   {res['signal']}")
    if res:
        lines.append(f"  wall:     {res.get('wall_time', 0):.3f}s   cpu {res.get('cpu_time', 0):.3f}s")
    for line in lines:
        print(printable(line))
    return 0


def logs(args: argparse.Namespace) -> int:
    with remote.client(args) as c:
        v = c.get(args.run_id)
    res = v.result or {}
    for rec in res.get("logs") or []:
        level = str(rec.get("level", "info")).upper()
        print(printable(f"{level:<7} {rec.get('message', rec)}"))
    for stream in ("stdout", "stderr"):
        text = res.get(stream)
        if text:
            sys.stdout.write(f"--- {stream} ---\n{text}")
            if not text.endswith("\n"):
                sys.stdout.write("\n")
    return 0


def cancel(args: argparse.Namespace) -> int:
    with remote.client(args) as c:
        for run_id in args.run_ids:
            v = c.cancel(run_id)
            print(printable(f"{v.id} {v.status}"))
    return 0


def download(args: argparse.Namespace) -> int:
    import os
    from sandbox.errors import InputError
    dest = args.output
    if not os.path.isdir(dest):
        raise InputError(f"-o {dest}: not a directory")
    with remote.client(args) as c:
        if args.paths:
            written = [str(c.download(args.run_id, p, dest)) for p in args.paths]
        else:
            written = c.download_all(args.run_id, dest, **(
                {"max_bytes": args.max_bytes} if args.max_bytes is not None else {}))
    for path in written:
        print(printable(path))
    return 0


def audit(args: argparse.Namespace) -> int:
    with remote.client(args) as c:
        data = c.audit(args.run_id, denied=args.denied)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    records = data.get("items", data.get("records", [])) if isinstance(data, dict) else data
    for r in records or []:
        if isinstance(r, dict):
            verdict = "denied" if r.get("denied") or r.get("verdict") == "denied" else \
                str(r.get("verdict", "allowed"))
            print(printable(f"{verdict:<8} {r.get('op') or r.get('operation') or '?':<8} "
                            f"{r.get('path', '')}"))
        else:
            print(printable(str(r)))
    return 0


def events(args: argparse.Namespace) -> int:
    with remote.client(args) as c:
        for ev in c.events(args.run_id, args.after):
            if args.json:
                print(json.dumps({"id": ev.id, "event": ev.event, "data": ev.data}), flush=True)
            elif ev.event in ("stdout", "stderr") and isinstance(ev.data, dict):
                remote.write_stream(ev.event, str(ev.data.get("text", "")))
            else:
                print(printable(f"{ev.id or '-'} {ev.event} {json.dumps(ev.data)}"),
                      file=sys.stderr, flush=True)
    return 0
