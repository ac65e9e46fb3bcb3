"""Names of everything the service keeps in Redis, in one place.

Per attempt of a run (`run_id`, `attempt`):
    started  set once, NX, by the worker that starts the attempt: a second
             delivery of the same message (Dramatiq requeues the messages of a
             worker it thinks dead) finds it and does nothing, so an attempt
             never runs twice
    lease    the worker's claim, with a TTL it renews; gone = the worker is gone
    done     set by the worker after its final report is on the stream and
             before it drops the lease, so a missing lease with `done` is an
             ended attempt, not a dead worker
Per run:
    cancel   set by the server; the worker holding the lease polls it
    secrets  the run's secret env values (JSON), set by the server when it first
             hands the run to the broker and never put in a message: a message
             stays in Redis while no worker takes it (and a week as a dead
             letter). Deleted when the run ends (by the worker that ran its last
             attempt, or by the server for a run no worker started); at most
             SECRET_TTL otherwise. A retry after a lost worker reads it again.
Per worker host:
    worker   its heartbeat (slots, running, queues, started), with a TTL; the
             workers page and `GET /v1/workers` read it
One stream, REPORTS, carries every worker's reports to the server (a consumer
group, so a report is acknowledged only after the server stored it).
"""
from __future__ import annotations

from sandbox.service.models import DEFAULT_QUEUE

PREFIX = "sandbox:"
REPORTS = PREFIX + "reports"
GROUP = "server"
MARK_TTL = 7 * 24 * 3600          # seconds `started`/`done` outlive an attempt
ACTOR = "sandbox_run"             # the Dramatiq actor every worker declares
SECRET_TTL = 24 * 3600            # seconds a run's secret values wait for a worker


def started(run_id: str, attempt: int) -> str:
    return f"{PREFIX}run:{run_id}:{attempt}:started"


def lease(run_id: str, attempt: int) -> str:
    return f"{PREFIX}run:{run_id}:{attempt}:lease"


def done(run_id: str, attempt: int) -> str:
    return f"{PREFIX}run:{run_id}:{attempt}:done"


def cancel(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:cancel"


def secrets(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:secrets"


WORKERS = PREFIX + "workers"       # a sorted set: host -> last heartbeat (epoch s)


def worker(host: str) -> str:
    """A worker's heartbeat record (a hash with a TTL): slots, running, queues."""
    return f"{PREFIX}worker:{host}"


def queue_for(labels: dict[str, str] | None) -> str:
    """The Dramatiq queue of a run: its `queue` label (e.g. "gpu"), else "default"."""
    q = (labels or {}).get("queue") or DEFAULT_QUEUE
    return q
