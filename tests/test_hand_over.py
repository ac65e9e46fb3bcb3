"""PID 1 hands the mount layer's descriptors to the monitor before its seccomp filter.

With a private network the filter hands every sendmsg to the monitor, so each
descriptor PID 1 sent after it (the output directory, the private /tmp, /dev/shm,
the copy-on-write layer) was a round trip through the notification thread
while the run waited: ~3 ms between the listener and Ready. `contain` now calls
`entry.hand_over` just before the seccomp layer. Judged from the host side: the
monitor has the private /tmp's descriptor before it has the listener, on both
starts (an exec'd program's PID 1, and a Python action's, which gets them from its
setup child), and what the descriptors are for still works.
"""
from __future__ import annotations

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.workflow import Workflow


def _action() -> Workflow:
    return Workflow.from_dict({"name": "hand over", "imports": ["sandbox.bench.actions"],
                               "stages": [{"actions": [{"name": "bench.noop"}]}]})


@pytest.mark.parametrize("kind", ["exec", "action"])
def test_the_descriptors_reach_the_monitor_before_the_filter(kind, tmp_path):
    with Launcher() as launcher:
        for i in range(2):   # a cold start, then a pooled one
            target = ["sh", "-c", "echo x > /tmp/f && echo y > \"$SANDBOX_OUTPUT\"/o"] \
                if kind == "exec" else _action()
            result = launcher.spawn(target, policy="strict", output_dir=str(tmp_path / str(i)))
            assert result.status == "ok", result
            t = result.timings
            assert "listener_received" in t and "scratch_received" in t
            assert t["scratch_received"] <= t["listener_received"]
            assert any(layer.startswith("seccomp") for layer in result.layers)
    if kind == "exec":
        assert (tmp_path / "1" / "o").read_text() == "y\n"   # the output descriptor still serves
