"""The bench's developer entry points follow the rule for every command: bad input gets
one line and exit 2, `--help` the usage and exit 0, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = ["memory", "audit", "netproxy", "stdio_hub", "zygote"]


@pytest.mark.parametrize("module", MODULES)
def test_help_and_bad_counts_get_one_line(module):
    name = f"sandbox.bench.{module}"
    h = subprocess.run([sys.executable, "-m", name, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert (h.returncode, h.stderr) == (0, ""), h.stderr
    assert h.stdout.startswith(f"usage: python -m {name}") and h.stdout.count("\n") == 1
    for bad in (["x"], ["0"], ["5", "6"]):
        p = subprocess.run([sys.executable, "-m", name, *bad], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2 and p.stdout == "", (bad, p.stdout, p.stderr)
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.startswith(f"{name}: expected one positive count"), p.stderr
