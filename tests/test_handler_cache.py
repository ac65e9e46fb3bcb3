"""A long-lived launcher keeps nothing of a finished run's message type names.

`HandlerSet.matching` cached its answer per message type, and the launcher's own
HandlerSet lives as long as the launcher: every distinct type name a child sent
stayed in its cache after the run (the run's retained budget charges them only
while it runs). Four runs of 30 distinct 1 MB names left ~120 MB behind in a
launcher with one handler registered (found by an attack probe). Judged from the
launcher process's live Python objects after the runs (tracemalloc), their
results dropped.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

MEASURE = r"""
import gc, json, sys, tracemalloc
from sandbox.launcher.launcher import Launcher

def held():   # bytes of Python objects alive (the allocator may keep freed pages)
    gc.collect()
    return tracemalloc.get_traced_memory()[0]

code = ("import os, struct\nfd = int(os.environ['SANDBOX_IPC_FD'])\n"
        "tag = os.urandom(4).hex()\n"
        "for i in range(30):\n"
        "    body = ('{\"type\":\"' + tag + '%03d' % i + 'x' * 1_000_000 + '\"}').encode()\n"
        "    os.write(fd, struct.pack('>I', len(body)) + body)\n")
la = Launcher(capture_output=True)
la.on("progress", lambda msg, info: None)
la.spawn(["true"])
tracemalloc.start()
before = held()
for _ in range(4):
    r = la.spawn([sys.executable, "-I", "-c", code])
    assert r.status == "ok", (r.status, r.reason)
    assert len(r.messages) == 30
    del r
print(json.dumps({"kept": held() - before}))
"""


@pytest.mark.isolation
def test_message_type_names_do_not_outlive_the_run():
    p = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    kept = json.loads(p.stdout.splitlines()[-1])["kept"]
    assert kept < 8 << 20, kept     # 120 names of 1 MB were kept before
