"""`sandbox audit list|show|summary`: read the file-access audit store."""
from __future__ import annotations

import argparse
import json
import sys
import time

HELP = """\
Read the file-access records the monitor wrote for audited runs
([audit] files = "all" or "denied"). The store is SQLite at
$SANDBOX_AUDIT_DB, else $SANDBOX_HOME/audit.sqlite (~/.local/state/sandbox/).
RUN_ID may be a unique prefix.

examples:
  sandbox audit list
  sandbox audit show 3f2a --denied
  sandbox audit show 3f2a --json > records.jsonl
  sandbox audit summary 3f2a
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="list and show file-access audit records", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", metavar="FILE", help="the audit database (default: see above)")
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("list", help="audited runs, newest first")
    ls.add_argument("-n", type=int, default=50, help="at most N runs (default 50)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_runs)
    sh = actions.add_parser("show", help="a run's records")
    sh.add_argument("run_id", metavar="RUN_ID")
    sh.add_argument("--denied", action="store_true", help="only denied operations")
    sh.add_argument("--json", action="store_true", help="JSON Lines, one record per line")
    sh.set_defaults(func=show)
    su = actions.add_parser("summary", help="counts by operation and verdict, top paths")
    su.add_argument("run_id", metavar="RUN_ID")
    su.add_argument("--top", type=int, default=10)
    su.add_argument("--json", action="store_true")
    su.set_defaults(func=summary)


def list_runs(args: argparse.Namespace) -> int:
    import sandbox.audit
    rows = sandbox.audit.runs(db=args.db, limit=args.n)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
        cmd = " ".join(json.loads(r["argv"])) if r["argv"] else r["mode"]
        drop = f" dropped={r['dropped']}" if r["dropped"] else ""
        print(f"{r['run_id']}  {when}  {r['policy']:<12} files={r['files']:<6} "
              f"records={r['records']}{drop}  {cmd[:60]}")
    return 0


def show(args: argparse.Namespace) -> int:
    import sandbox.audit
    recs = sandbox.audit.records(args.run_id, denied_only=args.denied, db=args.db)
    out = sys.stdout
    for r in recs:
        if args.json:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            mark = "ALLOW" if r["verdict"] == "allowed" else "DENY "
            extra = f" [{r['flags']}]" if r["flags"] else ""
            res = f" -> {r['result']}" if r["result"] else ""
            out.write(f"{r['seq']:>6} {r['pid']:>7} {mark} {r['operation']:<8} "
                      f"{r['syscall']:<11} {r['path']}{extra}  ({r['rule']}){res}\n")
    return 0


def summary(args: argparse.Namespace) -> int:
    import sandbox.audit
    s = sandbox.audit.summary(args.run_id, db=args.db, top=args.top)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"run {s['run_id']}  policy {s['policy']}  files={s['files']}  records {s['records']}"
          f"  (allowed {s['by_verdict']['allowed']}, denied {s['by_verdict']['denied']})"
          + (f"  dropped {s['dropped']}" if s["dropped"] else ""))
    print("by operation:")
    for op, c in s["by_operation"].items():
        print(f"  {op:<9} allowed {c['allowed']:>7}  denied {c['denied']:>5}")
    print("top paths:")
    for path, n in s["top_paths"]:
        print(f"  {n:>7}  {path}")
    if s["top_denied"]:
        print("top denied:")
        for d in s["top_denied"]:
            print(f"  {d['count']:>7}  {d['operation']:<8} {d['path']}  ({d['rule']})")
    return 0
