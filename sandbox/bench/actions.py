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
