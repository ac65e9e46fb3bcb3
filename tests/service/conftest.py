"""Fixtures for the service tests: a real `sandbox serve` on 127.0.0.1 (server.py).

    def test_x(server):                 # started, healthy; stopped after the test
        httpx.get(f"{server.url}/v1/runs", headers=server.auth())

    def test_y(start_server):           # a factory: extra flags, several servers
        s = start_server("--retain", "1s")

    def test_z(service_server, http):   # the same server; `http` an httpx.Client as admin
        http.get("/v1/runs"); service_server.client(other_token).get(...)

Each server has its own port, state directory and SANDBOX_HOME under the
test's tmp_path; teardown SIGKILLs its process group if SIGTERM did not end it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.server import Server, make_server

ServiceServer = Server      # the name the server-side tests import


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def start(*extra_args: str, env: dict[str, str] | None = None) -> Server:
        s = make_server(tmp_path / f"server{len(made)}", *extra_args, env=env)
        made.append(s)
        return s.start()

    yield start
    for s in made:
        s.stop()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture
def service_server(server: Server) -> Server:
    return server


@pytest.fixture
def http(server: Server) -> Iterator["httpx.Client"]:
    with server.client() as c:
        yield c
