"""The single-machine service needs no Redis: without --broker nothing of the
scale-out (Dramatiq, redis-py) is imported, and a bad --broker is one line."""
from __future__ import annotations

import subprocess
import sys


def test_serve_without_broker_imports_no_broker_code(tmp_path):
    code = ("import sys\n"
            "from sandbox.service.app import create_app\n"
            "from sandbox.service.config import ServiceConfig\n"
            f"create_app(ServiceConfig(state={str(tmp_path / 'state')!r}))\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dramatiq', 'redis')"
            " or m.startswith('sandbox.service.scaleout'))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_bad_broker_url_is_one_line_exit_2():
    for argv in (["worker", "--broker", "http://example"],
                 ["serve", "--broker", "nonsense", "--allow-root"]):
        out = subprocess.run([sys.executable, "-m", "sandbox", *argv], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2, (argv, out)
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Redis URL" in out.stderr
