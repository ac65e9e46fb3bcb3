"""Scale-out: `sandbox serve --broker redis://...` hands runs to `sandbox worker`
processes on any number of hosts through Dramatiq on Redis (docs/scaling.md).

Who owns what:
- the API server keeps the one store (SQLite) and is the only writer of it;
  it claims queued runs, enqueues one Dramatiq message per attempt
  (`dispatch`), applies what workers report (`reports`) and declares runs
  whose lease expired `lost` or re-queues them (`dispatch.Reaper`);
- a worker executes a message with its local Launcher, holds a per-run lease
  in Redis that it renews (`lease`), and reports events, outputs and the
  result on one Redis stream (`worker`).

Redis keys are in `keys`; the message and report shapes in `messages`.
"""
