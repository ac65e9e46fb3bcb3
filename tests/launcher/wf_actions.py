"""Actions used by the launcher tests (imported inside the sandbox)."""
from sandbox.workflow import action


@action("echo_value")
def echo_value(ctx):
    ctx.store.put("echoed", ctx.params["value"])


@action("change_some")
def change_some(ctx):
    ctx.store.put("change", ctx.store.get_int("change") + 1)
    ctx.store.put("new", [1, 2])
    ctx.store.delete("gone")


@action("chatty")
def chatty(ctx):
    ctx.logger.info("one")
    ctx.send("custom.event", {"n": 1})
    ctx.logger.warning("two")
    ctx.send("custom.event", {"n": 2})


@action("boom")
def boom(ctx):
    raise ValueError("boom!")


@action("eat_memory")
def eat_memory(ctx):
    hog = []
    while True:
        hog.append(bytearray(16 << 20))
