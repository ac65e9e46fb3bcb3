"""A real `sandbox serve` on 127.0.0.1 for the service tests (issue 16 item 8).

No TestClient: the tests speak HTTP to a uvicorn the test started, in its own
process, with its own state directory, so that `kill -9` and a restart are the
real thing. One class, used by the `server` fixture in conftest.py and by the
durability tests that need to kill and restart it on the same state and port.

The admin token is read from the file `sandbox serve` writes (0600) on first
start: STATE/ADMIN_TOKEN_FILE.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ADMIN_TOKEN_FILE = "admin.token"
START_TIMEOUT = 60.0     # the machine is shared by eight agents on two cores


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick). Another process may
    take it before the server binds: `Server.start` retries with a new one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One `sandbox serve` process; `state` survives `kill9()` and `restart()`.
    Started as root it passes --allow-root (the tests run as root in CI's first
    pass, and as an unprivileged user in the second)."""
    state: str                       # --state (a str: tests build paths from it)
    home: str                        # SANDBOX_HOME of the server (run history etc.)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        with open(os.path.join(self.state, ADMIN_TOKEN_FILE)) as f:
            return f.read().strip()

    def auth(self, token: str | None = None) -> dict[str, str]:
        """The Authorization header for `token` (default: the admin token)."""
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def client(self, token: str | None = None, **kw: object) -> httpx.Client:
        """A raw httpx client with `token` (default: the admin's), for HTTP-level tests."""
        return httpx.Client(base_url=self.url, headers=self.auth(token), timeout=60.0,
                            **kw)  # type: ignore[arg-type]

    @property
    def log(self) -> str:
        return self.log_path or ""

    def command(self) -> list[str]:
        root = ["--allow-root"] if os.geteuid() == 0 else []
        return [sys.executable, "-m", "sandbox", "serve", "--listen", f"127.0.0.1:{self.port}",
                "--state", self.state, *root, *self.extra_args]

    def start(self, attempts: int = 3) -> "Server":
        """Start and wait for /healthz; keeps the port across restarts, picks a new
        one only when the first start finds it taken."""
        last = ""
        for _ in range(attempts):
            if not self.port:
                self.port = free_port()
            self.log_path = os.path.join(os.path.dirname(self.state), f"serve-{self.port}.log")
            log = open(self.log_path, "ab")
            env = {**os.environ, "SANDBOX_HOME": str(self.home), **self.env}
            env.pop("SANDBOX_SERVER", None)
            env.pop("SANDBOX_TOKEN", None)
            # its own session: kill9() reaches the server and nothing else of ours
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
            log.close()
            if self._wait_healthy():
                return self
            last = self.log_tail()
            self.stop()
            if "address already in use" not in last.lower():
                break
            self.port = 0
        raise RuntimeError(f"sandbox serve did not become healthy:\n{last}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return False

    def log_tail(self, n: int = 4000) -> str:
        try:
            if not self.log_path:
                return ""
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        """SIGKILL the server's whole process group, as a crash would (runs it was
        executing lose their monitor too)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> "Server":
        self.kill9()
        return self.start()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # stragglers of its group
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None


def make_server(tmp: Path, *extra_args: str, env: dict[str, str] | None = None) -> Server:
    """A not yet started server whose state and home live under `tmp` (0700)."""
    tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
    home = tmp / "home"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Server(state=str(tmp / "state"), home=str(home), extra_args=list(extra_args),
                  env=dict(env or {}))
