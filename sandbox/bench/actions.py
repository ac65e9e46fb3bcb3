"""Actions used by the benchmarks (part of the runtime, so any policy can import them)."""
from sandbox.workflow import action


@action("bench.noop")
def noop(ctx):
    pass


@action("bench.messages")
def messages(ctx):
    n = ctx.params.get("n", 10000)
    for i in range(n):
        ctx.send("bench.tick", i)


@action("bench.sleep")
def sleep(ctx):
    import time
    time.sleep(ctx.params.get("seconds", 1.0))


@action("bench.signal_state")
def signal_state(ctx):
    """The signals this action's process does not leave at SIG_DFL, and those blocked."""
    import signal
    handled = [s.name for s in signal.valid_signals()
               if s not in (signal.SIGKILL, signal.SIGSTOP)
               and signal.getsignal(s) is not signal.SIG_DFL]
    blocked = [s.name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])]
    ctx.store["signal_state"] = {"handled": handled, "blocked": blocked}
