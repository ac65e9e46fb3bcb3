"""A whole cluster on one machine, as real processes: a redis-server, `sandbox
serve --broker` and `sandbox worker`s. Used by the scale-out tests and by
`sandbox bench --workers`.

Redis runs from Debian's binary on 127.0.0.1 on a free port, with its data
(an append-only file, fsync on every write, as docs/scaling.md configures it)
in the test's directory, so `kill -9` and a restart are the real thing and
lose only what Redis itself would. Workers are real `sandbox worker`
processes, each in its own session with its own state directory, home and
host name.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_kill(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process's group, SIGKILL what is left after a grace period."""
    if proc is None:
        return
    _group_kill(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    _group_kill(proc, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class Redis:
    dir: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if not self.port:
            self.port = free_port()
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes", "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        _group_kill(self.proc, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        _group_kill(self.proc, signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc = None


@dataclass
class Server:
    """A `sandbox serve` on a free loopback port (the tests use their richer
    tests/service/server.py; this one is what the bench needs)."""
    root: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.root / "state" / "admin.token").read_text().strip()

    def start(self, timeout: float = 60.0) -> "Server":
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.root / "home").mkdir(mode=0o700, exist_ok=True)
        self.port = self.port or free_port()
        root = ["--allow-root"] if os.geteuid() == 0 else []
        cmd = [sys.executable, "-m", "sandbox", "serve", "--listen",
               f"127.0.0.1:{self.port}", "--state", str(self.root / "state"), *root,
               *self.args]
        log = open(self.root / "serve.log", "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "SANDBOX_HOME": str(self.root / "home")})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = (self.root / "serve.log").read_bytes()[-2000:].decode(errors="replace")
        self.stop()
        raise RuntimeError(f"sandbox serve did not start: {tail}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120,
                            headers={"Authorization": f"Bearer {self.token}"})

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None


@dataclass
class Worker:
    broker: str
    root: Path
    host: str
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Worker":
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        home = self.root / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        root = ["--allow-root"] if os.geteuid() == 0 else []
        cmd = [sys.executable, "-m", "sandbox", "worker", "--broker", self.broker,
               "--state", str(self.root / "state"), "--host-name", self.host, *root,
               *self.args]
        log = open(self.root / "worker.log", "ab")
        env = {**os.environ, "SANDBOX_HOME": str(home)}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        return self

    def log_tail(self) -> str:
        try:
            return (self.root / "worker.log").read_bytes()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        """SIGKILL the worker process only (not its group): its sandboxes must die
        with it by themselves (the launcher's lifelines), as on a real crash."""
        if self.proc is not None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None
