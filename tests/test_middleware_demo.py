"""The spawn_middleware demo verifies itself; every check must pass."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.isolation


def test_spawn_middleware_demo_passes_every_check():
    from sandbox.demos.spawn_middleware import run_demo
    lines: list[str] = []
    assert run_demo(out=lines.append), "\n".join(lines)
    assert not any("[FAIL]" in line for line in lines)
    assert sum("[PASS]" in line for line in lines) == 12


def test_the_sealer_pair_refuses_a_forged_value():
    from sandbox.demos.spawn_middleware import Sealer
    from sandbox.ipc.frames import Message
    parent = Sealer()
    kid = Sealer(key=parent.key.hex())
    msg = kid.outbound(Message("store_put", {"key": "secret_x", "value": [1, 2.5]}))
    assert "sealed" in msg.payload["value"]
    assert parent.inbound(msg).payload["value"] == [1, 2.5]
    msg.payload["value"]["tag"] = "0" * 64
    with pytest.raises(ValueError):
        parent.inbound(msg)
