"""The C floor of audited opens per second (`notify_floor.c`, built here with cc at bench time).

The issue-15 target for the audit loop is a ratio against a minimal seccomp
user-notification loop in C measured in the same run: receive, read the path
argument (process_vm_readv), answer CONTINUE, with SYNC_WAKE_UP -- the kernel's
round trip and nothing else. The C source ships in the package; the binary is
built into a temporary directory and never installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

SOURCE = os.path.join(os.path.dirname(__file__), "notify_floor.c")


class FloorUnavailable(RuntimeError):
    """No C compiler, or the build failed: the ratio cannot be taken in this run."""


@dataclass
class Floor:
    binary: str
    _dir: tempfile.TemporaryDirectory

    def rate(self, n: int, path: str, program: list[str] | None = None) -> float:
        """Opens per second of the C loop (its own timing of the loop, start-up excluded).
        With `program` (an argv that opens `path` n times and prints the seconds), the C
        loop answers that program instead of its own C child."""
        out = subprocess.run([self.binary, str(n), path, *(program or [])],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise FloorUnavailable(f"notify_floor failed: {out.stderr.strip()[-300:]}")
        seconds = float(out.stdout.split()[0])
        return n / seconds

    def close(self) -> None:
        self._dir.cleanup()


def build() -> Floor:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FloorUnavailable("no C compiler (apt-get install gcc): the C floor is not measured")
    tmp = tempfile.TemporaryDirectory(prefix="sandbox-bench-floor-")
    binary = os.path.join(tmp.name, "notify_floor")
    p = subprocess.run([cc, "-O2", "-o", binary, SOURCE], capture_output=True, text=True)
    if p.returncode != 0:
        tmp.cleanup()
        raise FloorUnavailable(f"building {SOURCE} failed: {p.stderr.strip()[-300:]}")
    return Floor(binary, tmp)
