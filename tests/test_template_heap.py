"""The warm template's C heap, and a Python action's C environment in one buffer.

A fork's malloc takes a free chunk of the template's heap wherever it lies, and
writing it copies that page: `template.plug_heap` holds the free chunks below
the heap's top, so a fork's mallocs are carved side by side from the top.
`libc.set_environ` gives PID 1 the run's C environment in one buffer and one
pointer array instead of a setenv (two mallocs) per variable. Both run in a
fresh interpreter here: they change the process they run in for good.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PLUG = textwrap.dedent("""
    import json
    from sandbox.isolation import libc
    from sandbox.sandboxee import template
    # a fragmented heap: blocks of many sizes, every other one freed
    kept = [bytes(600 + 16 * (i % 40)) for i in range(4000)]
    del kept[::2]
    before = libc.heap_free_below_top()
    left = template.plug_heap()
    print(json.dumps([before, left, libc.heap_free_below_top()]))
""")

ENV = textwrap.dedent("""
    import os, subprocess
    from sandbox.isolation import libc
    libc.set_environ([b"A=1", b"B=two words", b"PATH=/usr/bin:/bin", b"E="])
    print(subprocess.run(["/usr/bin/env"], capture_output=True, text=True).stdout, end="")
    os.putenv("C", "3")                     # glibc copies the array, then adds
    print(subprocess.run(["/usr/bin/env"], capture_output=True, text=True).stdout, end="")
    for bad in ([b"NOEQUALS"], [b"=x"], [b"A=b\\0c"]):
        try:
            libc.set_environ(bad)
        except ValueError:
            print("refused", bad)
""")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "HOST_ONLY": "x"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_plug_holds_the_free_chunks_below_the_top():
    before, left, after = json.loads(_run(PLUG).splitlines()[-1])
    assert before > 512 * 1024, before   # the fragmentation above left that much free
    # nearly nothing is left: the plug keeps no list of what it holds, whose growth by
    # realloc freed its old arrays below the top (up to ~55 KiB, by the heap's layout)
    assert 0 <= left == after <= before // 400, (before, left, after)


def test_the_c_environment_is_the_given_entries_and_nothing_else():
    lines = _run(ENV).splitlines()
    first = ["A=1", "B=two words", "PATH=/usr/bin:/bin", "E="]
    assert lines[:4] == first                              # HOST_ONLY is gone
    assert lines[4:9] == first + ["C=3"]
    assert lines[9:] == ["refused [b'NOEQUALS']", "refused [b'=x']", "refused [b'A=b\\x00c']"]
