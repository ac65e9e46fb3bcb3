"""`sandbox audit list|show|summary`: read the file-access audit store.

Every string the sandboxed program could choose (paths, symlink targets, flags
text) goes through `sandbox.printable.printable` before it reaches the
terminal, and through `sandbox.audit.jsonable` before JSON: no terminal escape
of the program's reaches the caller's screen (issue 10, finding 12)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from sandbox.printable import printable

HELP = """\
Read the file-access records the monitor wrote for audited runs
([audit] files = "all" or "denied"). The store is a directory with one SQLite
file per run: $SANDBOX_AUDIT_DB, else $SANDBOX_HOME/audit
(~/.local/state/sandbox/audit). RUN_ID may be a unique prefix. Repeats of a
record are one line with a count (xN). Control characters and bytes that are
not UTF-8 are shown escaped (\\x1b, \\u009b, \\xff). `sandbox audit` alone
is `sandbox audit list`.

examples:
  sandbox audit list
  sandbox audit show 3f2a --denied
  sandbox audit show 3f2a --json > records.jsonl
  sandbox audit summary 3f2a
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="list and show file-access audit records", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", metavar="DIR", help="the audit store (default: see above)")
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION")
    ls = actions.add_parser("list", help="audited runs, newest first")
    _db_here_too(ls)
    ls.add_argument("-n", type=int, default=50, help="at most N runs (default 50)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_runs)
    sh = actions.add_parser("show", help="a run's records")
    _db_here_too(sh)
    sh.add_argument("run_id", metavar="RUN_ID")
    sh.add_argument("--denied", action="store_true", help="only denied operations")
    sh.add_argument("--json", action="store_true", help="JSON Lines, one record per line")
    sh.set_defaults(func=show)
    su = actions.add_parser("summary", help="counts by operation and verdict, top paths")
    _db_here_too(su)
    su.add_argument("run_id", metavar="RUN_ID")
    su.add_argument("--top", type=int, default=10)
    su.add_argument("--json", action="store_true")
    su.set_defaults(func=summary)
    from sandbox.cli.common import default_action
    default_action(p, actions, "list")


def _db_here_too(p: argparse.ArgumentParser) -> None:
    """--db after the action as well (`sandbox audit show RUN --db DIR`, as `policy suggest`
    takes it); SUPPRESS keeps the one given before the action when none is given here."""
    p.add_argument("--db", metavar="DIR", default=argparse.SUPPRESS,
                   help="the audit store (as sandbox audit --db)")


def list_runs(args: argparse.Namespace) -> int:
    import sandbox.audit
    rows = sandbox.audit.runs(db=args.db, limit=args.n)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
        try:
            cmd = " ".join(map(str, json.loads(r["argv"]))) if r["argv"] else r["mode"]
        except (ValueError, TypeError):
            cmd = str(r["argv"])
        drop = f" dropped={r['dropped']}" if r["dropped"] else ""
        trunc = f" truncated(not stored {r['not_stored']})" if r.get("truncated") else ""
        print(f"{printable(r['run_id'])}  {when}  {printable(r['policy']):<12} "
              f"files={printable(r['files']):<6} records={r['records'] or 0}{drop}{trunc}  "
              f"{printable(cmd[:60])}")
    return 0


def show(args: argparse.Namespace) -> int:
    import sandbox.audit
    recs = sandbox.audit.records(args.run_id, denied_only=args.denied, db=args.db)
    out = sys.stdout
    for r in recs:
        if args.json:
            # ASCII: U+009B (a one-byte CSI) and bidi overrides are valid JSON text
            out.write(json.dumps(sandbox.audit.jsonable(r)) + "\n")
        else:
            out.write(show_line(r) + "\n")
    return 0


def show_line(r: dict) -> str:
    """One record as one line of printable text."""
    mark = "ALLOW" if r["verdict"] == "allowed" else "DENY "
    extra = f" [{printable(r['flags'])}]" if r["flags"] else ""
    res = f" -> {printable(r['result'])}" if r["result"] else ""
    times = f" x{r['count']}" if r.get("count", 1) > 1 else ""
    return (f"{r['seq']:>6} {r['pid']:>7} {mark} {printable(r['operation']):<8} "
            f"{printable(r['syscall']):<11} {printable(r['path'])}{extra}  "
            f"({printable(r['rule'])}){res}{times}")


def summary(args: argparse.Namespace) -> int:
    import sandbox.audit
    s = sandbox.audit.summary(args.run_id, db=args.db, top=args.top)
    if args.json:
        s = dict(s, top_paths=[[sandbox.audit.jsonable({"path": p})["path"], n]
                               for p, n in s["top_paths"]],
                 top_denied=[sandbox.audit.jsonable(d) for d in s["top_denied"]])
        print(json.dumps(s, indent=2))
        return 0
    print(f"run {printable(s['run_id'])}  policy {printable(s['policy'])}  "
          f"files={printable(s['files'])}  records {s['records']}"
          f"  (allowed {s['by_verdict']['allowed']}, denied {s['by_verdict']['denied']})"
          + (f"  dropped {s['dropped']}" if s["dropped"] else "")
          + (f"  truncated: {s['not_stored']} not stored" if s["truncated"] else ""))
    print("by operation:")
    for op, c in s["by_operation"].items():
        print(f"  {printable(op):<9} allowed {c['allowed']:>7}  denied {c['denied']:>5}")
    print("top paths:")
    for path, n in s["top_paths"]:
        print(f"  {n:>7}  {printable(path)}")
    if s["top_denied"]:
        print("top denied:")
        for d in s["top_denied"]:
            print(f"  {d['count']:>7}  {printable(d['operation']):<8} {printable(d['path'])}  "
                  f"({printable(d['rule'])})")
    return 0
