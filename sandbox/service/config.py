"""The service's settings and the layout of its state directory.

    <state>/            0700, the service user's
      service.db        the store (SQLite, WAL), 0600
      admin.token       the admin bearer token, 0600
      audit/            the launcher's audit store (hidden from every sandbox)
      runs/<id>/input   the run's ${WORKDIR}: its uploaded files
      runs/<id>/output  the run's ${OUTPUT}, copied out when it ends

Nothing under <state> is in any sandbox's view except the run's own input
and output directories (sandbox.service.tenancy refuses a policy that would
bind anything else there).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


@dataclass
class ServiceConfig:
    state: str
    host: str = "127.0.0.1"
    port: int = 8700
    max_concurrent: int = 8          # sandboxes at once, every token together
    max_queued: int = 10000          # queued runs, every token together
    max_body: int = 64 * 1024 * 1024   # bytes of one request body (413 above)
    max_file: int = 32 * 1024 * 1024   # bytes of one input file
    retain: float | None = None      # seconds a finished run is kept (None: forever)
    default_policy: str = "default"
    hostname: str = field(default_factory=socket.gethostname)
    broker: str | None = None        # redis://... : runs go to `sandbox worker`s (scaling.md)
    lease_ms: int = 10000            # a worker's lease on a run, renewed every lease/4

    @property
    def db_path(self) -> str:
        return os.path.join(self.state, "service.db")

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.state, "runs")

    @property
    def audit_dir(self) -> str:
        return os.path.join(self.state, "audit")

    def run_dir(self, run_id: str) -> str:
        return os.path.join(self.runs_dir, run_id)

    def input_dir(self, run_id: str) -> str:
        return os.path.join(self.runs_dir, run_id, "input")

    def output_dir(self, run_id: str) -> str:
        return os.path.join(self.runs_dir, run_id, "output")

    def stdin_file(self, run_id: str) -> str:
        """The run's stdin, kept beside (never in) its input directory and out of the
        store: every listing read the stored request back, stdin and all."""
        return os.path.join(self.runs_dir, run_id, "stdin")


def default_state() -> str:
    """The state directory of `sandbox serve` and `sandbox token` without --state."""
    from sandbox.launcher.prepare import state_dir
    return os.path.join(state_dir(), "service")


def prepare_state(path: str) -> str:
    """The state directory, made 0700 (an existing one is tightened), real path.

    It must be the caller's own and not reached through a symlink at its last
    component: it holds the tokens and every tenant's data."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to this user "
                                  f"(uid {os.geteuid()}); give a state directory of your own")
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    for sub in ("runs", "audit"):
        try:
            os.mkdir(os.path.join(path, sub), 0o700)
        except FileExistsError:
            os.chmod(os.path.join(path, sub), 0o700, follow_symlinks=False)
    return os.path.realpath(path)
