"""Fixtures: a real redis-server, `sandbox serve --broker` and `sandbox worker`s.

Every module here sets `pytestmark = pytest.mark.redis` (root CI pass only): they test the distribution, not the
isolation layers, and one Redis per CI run is enough.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.service.scaleout.local import REDIS, Redis, Worker
from service.server import Server, make_server

LEASE = "2s"     # short, so dead workers are found quickly


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    import os
    if not os.path.exists(REDIS):
        pytest.fail("redis-server is not installed (scripts/install.sh installs it)")
    r = Redis(dir=str(tmp_path / "redis")).start()
    yield r
    r.stop()


@pytest.fixture
def start_worker(tmp_path: Path, redis_server: Redis) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def start(host: str, *args: str) -> Worker:
        w = Worker(redis_server.url, tmp_path / f"worker-{host}", host, list(args)).start()
        made.append(w)
        return w

    yield start
    for w in made:
        w.stop()


@pytest.fixture
def broker_server(tmp_path: Path, redis_server: Redis) -> Iterator[Server]:
    s = make_server(tmp_path / "server", "--broker", redis_server.url, "--lease", LEASE)
    s.start()
    yield s
    s.stop()
