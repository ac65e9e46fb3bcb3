"""`sandbox policy suggest RUN_ID [-o FILE]`: a least-privilege policy learned from a run."""
from __future__ import annotations

import argparse


def register(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "suggest", help="write the least policy that grants what an audited run used",
        description="Reads the run's audit records ([audit] files = \"all\") and prints a "
                    "policy TOML: base's rules are left to extends = [\"base\"], directories "
                    "with at least --min-files used entries collapse into one rule (never a "
                    "top-level or system directory), ${WORKDIR}/${OUTPUT}/${PYTHON} are put "
                    "back. See docs/audit.md.")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id (or a unique prefix)")
    p.add_argument("-o", "--output-file", metavar="FILE", help="write the TOML here")
    p.add_argument("--min-files", type=int, default=3, metavar="N",
                   help="collapse a directory when N entries under it were used (default 3)")
    p.add_argument("--db", metavar="DIR", help="the audit store (default: $SANDBOX_AUDIT_DB "
                                                "or $SANDBOX_HOME/audit, a directory)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sandbox.audit.suggest import suggest_for_run
    text, _ = suggest_for_run(args.run_id, db=args.db, min_files=args.min_files)
    if args.output_file:
        with open(args.output_file, "w") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0
