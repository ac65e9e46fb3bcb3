"""Write docs/compatibility.md: every workload directly, under strict and default, and bwrap.

Run from the tests directory: ``../.venv/bin/python -m compat.matrix ../docs/compatibility.md``.
"""
from __future__ import annotations

import collections
import os
import platform
import shutil
import sys
import time

from compat.expectations import INTENDED, INTENDED_UNDER_RLIMIT_AS, KNOWN_BROKEN
from compat.harness import available, run, verdict
from compat.workloads import WORKLOADS

MODES = ("strict", "default", "bwrap")
MARK = {"match": "✅ match", "fails": "❌ fails", "wrong": "⚠️ **silently wrong**", "n/a": "n/a"}


def main(path: str) -> None:
    rows, counts = [], {m: collections.Counter() for m in MODES}
    started = time.time()
    for w in WORKLOADS:
        if not available(w):
            cells = {m: "n/a" for m in MODES}
        else:
            ref = run("direct", w)
            cells = {}
            for m in MODES:
                if m == "bwrap" and not shutil.which("bwrap"):
                    cells[m] = "n/a"
                    continue
                cells[m] = verdict(ref, run(m, w))
        for m in MODES:
            counts[m][cells[m]] += 1
        notes = sorted({why for (n, _), why in list(INTENDED.items()) + list(KNOWN_BROKEN.items())
                        + [(k, 'unprivileged here: ' + v) for k, v in INTENDED_UNDER_RLIMIT_AS.items()]
                        if n == w.name})
        rows.append(f"| `{w.name}` | {w.what.replace(chr(124), chr(92) + chr(124))} | " + " | ".join(MARK[cells[m]] for m in MODES)
                    + f" | {'; '.join(notes)} |")
        print(w.name, cells, file=sys.stderr, flush=True)
    total = len(WORKLOADS)
    summary = ["| | works | fails | silently wrong |", "|---|---|---|---|"]
    for m in MODES:
        c = counts[m]
        summary.append(f"| {m} | {c['match']}/{total} | {c['fails']} | {c['wrong']} |")
    text = f"""# Compatibility: everyday workloads under the built-in policies

Each workload of `tests/compat/workloads.py` runs directly (the reference), under
`sandbox exec --policy strict`, under `--policy default`, and under bubblewrap
(`bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --bind WORKDIR WORKDIR
--unshare-all --die-with-parent --new-session`), each from a fresh copy of its
work directory with the same stdin and environment. A mode *matches* when its
exit status and stdout equal the direct run's; *fails* when the exit status
differs; and is *silently wrong* when the status is the same but the output is
not.

`tests/compat/test_compat.py` checks every cell of `strict` and `default` on
every CI run: a cell must match, or be an **intended** difference (the policy
doing what it promises; it must then fail loudly), or a **known defect** with
its open issue (a strict xfail, so a fix must update the list).

Made by `cd tests && ../.venv/bin/python -m compat.matrix ../docs/compatibility.md`
on the 2-core development machine (kernel {platform.release()}),
as uid {os.getuid()}, in {time.time() - started:.0f} s.

{chr(10).join(summary)}

| workload | what | strict | default | bwrap | why it differs |
|---|---|---|---|---|---|
{chr(10).join(rows)}

## Documented differences the matrix does not show

- **JVM heap sizing on a cgroup v1 host.** The run's own cgroups are shown
  read-only at `/sys/fs/cgroup` (memory, pids, freezer: the controllers the
  run has a cgroup of its own in), but JDK 17 uses its cgroup v1 support only
  when the cpuset, cpu, cpuacct *and* memory hierarchies are all mounted
  (`java -Xlog:os+container=debug` says "Required cgroup v1 cpuset subsystem
  not found"). It then sizes the heap from the host's RAM:
  `java -XX:+PrintFlagsFinal -version` shows `MaxHeapSize = 6320816128`
  (a quarter of this machine's RAM) under `strict`'s 512 MiB memory cgroup,
  the same as directly. The limit still holds (the memory cgroup counts what
  the heap really uses, not what it reserves); give the JVM its size explicitly
  (`-Xmx384m`, or `-XX:MaxRAM=512m`). Mounting the caller's cpu, cpuacct and
  cpuset cgroups would show the JVM what it wants, but also the caller's
  other cgroups, which the view never shows; on a cgroup v2 host the JVM
  reads the run's own cgroup and sizes itself from the limit.
- **A standard descriptor the caller closed** (`sandbox exec -- cmd >&-`) is
  `/dev/null` for the program, not closed: the launcher holds 0, 1 and 2 open
  so that nothing it opens later takes their numbers (a sandbox's output once
  reached the launcher's own control socket that way). Directly, `echo hi >&-`
  fails with EBADF (exit 1); sandboxed it succeeds and its output is
  discarded. bubblewrap passes the closed descriptor through.
- **One more descriptor.** The program inherits `SANDBOX_IPC_FD` (a socket),
  the channel of workflow messages and nested spawns, so `ls /proc/self/fd`
  lists one entry more than directly.
- **The limits are the policy's, not the caller's.** `strict` allows 256 open
  files and 64 MiB per file (`default`: 1024 and 1 GiB): 600 pipes fail with
  EMFILE, and `truncate -s 1G` dies of SIGXFSZ (exit 153), where a root shell
  here allows more. Raise `[limits] open_files` or `file_size`.
- **No network is "Network is unreachable".** With `network = "none"` an IPv4
  or IPv6 `connect` fails with ENETUNREACH at once (the monitor answers it,
  before Landlock's EACCES, which `wget` retried twenty times for minutes);
  bubblewrap's private network has `lo` up, so a closed loopback port there
  is ECONNREFUSED. Both end `wget` at once with exit 4 (`wget-unreachable`).
"""
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "compatibility.md")
