"""Actions for the nested pre-check attack (tests/test_nested_precheck.py).

Imported inside the sandbox: plant a large Python file where the sandbox may
write, then ask the launcher for a nested spawn whose workflow imports it.
"""
from __future__ import annotations

import os

from sandbox.workflow import action


@action("plant.and_nest")
def plant_and_nest(ctx):
    size = int(ctx.params["size"])
    where = ctx.params.get("dir") or str(ctx.output_dir)   # a host tree the policy grants
    path = os.path.join(where, "planted.py")
    line = b"a = (1, 2, 3, 4, 5, 6, 7, 8)\n"
    with open(path, "wb") as f:
        f.write(line * (size // len(line)))
    module = ctx.params["module"].replace("{dir}", where)
    child = {"name": "planted", "imports": [module],
             "stages": [{"id": "s", "actions": [{"name": "plant.noop"}]}]}
    result = ctx.spawn(child)
    ctx.store.put("child", {"status": result["status"], "reason": result["reason"]})


@action("plant.noop")
def noop(ctx):
    pass


@action("plant.nest_imports")
def nest_imports(ctx):
    """A nested request whose workflow lists many modules that exist (the standard
    library's): each distinct one was a source-scan worker in the launcher."""
    child = {"name": "many", "imports": list(ctx.params["imports"]),
             "stages": [{"id": "s", "actions": [{"name": "plant.noop"}]}]}
    result = ctx.spawn(child)
    ctx.store.put("child", {"status": result["status"], "reason": result["reason"]})


@action("plant.nest_many")
def nest_many(ctx):
    """Many nested requests, each naming a few modules that exist and then a function
    none defines: refused by the launcher's check after scanning them, so no sandbox
    starts and the child pays nothing."""
    statuses = []
    for names in ctx.params["batches"]:
        child = {"name": "many", "imports": names,
                 "stages": [{"id": "s", "actions": [{"name": "json:no_such_function"}]}]}
        statuses.append(ctx.spawn(child)["status"])
    ctx.store.put("statuses", statuses)


@action("plant.nest_odd")
def nest_odd(ctx):
    """Nested requests whose refusal reasons quote what the child sent."""
    import json
    fill = "@" * int(ctx.params.get("long", 0))      # grown here: the start frame is bounded
    reasons = []
    for request in ctx.params["requests"]:
        policy, child = json.loads(json.dumps(request).replace("@@", fill))
        got = ctx.spawn(child, policy=policy)
        reasons.append(len(got["reason"]))
    ctx.store.put("reason_lengths", reasons)


@action("plant.deep_store")
def deep_store(ctx):
    """A store value as deep as a store_put frame allows (62 levels): fine on its own
    frame, 66 levels inside a spawn_result, which the requesting child must refuse."""
    value: list = []
    for _ in range(61):
        value = [value]
    ctx.store.put("deep", value)


@action("plant.nest_deep")
def nest_deep(ctx):
    child = {"name": "deep", "imports": ["plant_actions"],
             "stages": [{"id": "s", "actions": ["plant.deep_store"]}]}
    got = ctx.spawn(child)
    ctx.store.put("child", {"status": got["status"], "reason": got["reason"]})
