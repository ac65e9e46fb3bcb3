"""GoStage's `examples/spawn_middleware`, sandboxed: `sandbox demo spawn_middleware`.

The parent installs, in this order (first = outermost, see docs/middleware.md):

1. `Metrics`                     messages/bytes per type and direction, spawn duration
2. a child-side transform        prefixes log messages with "[child]" and stamps them
3. `redaction(["password"])`     the secret never leaves the child
4. `Sealer` (encrypt/decrypt)    values of ``secret_*`` store keys are sealed in the
                                 child and opened in the parent
5. `WireTap`                     records what arrives from the wire (sealed, unopened)
6. `HmacAuth`                    innermost: signs last in the child, verifies first here

and lifecycle hooks: a before_spawn hook that rewrites the workflow (adds a
store value) and tightens the policy (a shorter wall-clock limit), another
that tries to loosen it (refused, on a second spawn), an after_spawn hook
registered twice (runs once), and an on_child_message hook.

The "encryption" is a demonstration: a SHA-256 counter-mode keystream with a
per-run random key and an HMAC tag, built from the standard library only. It
shows how a wrap/unwrap pair composes across the two ends; it is not a
vetted cipher, and (like every child-side middleware) it protects nothing
from a hostile child, which holds the key.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import time
from typing import Any

from sandbox.ipc.frames import Message
from sandbox.middleware import HmacAuth, IpcMiddleware, Metrics, SpawnInfo, child, redaction
from sandbox.middleware.base import replace_msg
from sandbox.workflow import ActionContext, Workflow, action

SECRET = "hunter2-do-not-leak"
WORKFLOW: dict[str, Any] = {
    "id": "spawn-middleware-demo",
    "name": "Spawn middleware demo",
    "tags": ["demo", "gostage:spawn_middleware"],
    "policy": "spawn_middleware",
    "imports": ["sandbox.demos.spawn_middleware"],
    "store": {"items": [1.5, 2.5, 3.0], "password": SECRET},
    "stages": [{"id": "work", "actions": ["mwdemo.process", "mwdemo.report"]}],
}


@action("mwdemo.process")
def process(ctx: ActionContext) -> None:
    items = ctx.store.get_list("items") or []
    ctx.logger.info(f"processing {len(items)} items with password={ctx.store.get('password')}")
    ctx.store.put("secret_token", {"token": "tok-" + "x" * 8, "scopes": ["read", 2]})
    ctx.store.put("doubled", [i * 2 for i in items])
    ctx.store.put("count", len(items))
    ctx.store.put("password", ctx.store.get("password"))   # an accidental write-back
    ctx.send("progress", {"done": len(items), "of": len(items)})


@action("mwdemo.report")
def report(ctx: ActionContext) -> None:
    ctx.logger.info("done", extra={"spawned_by": ctx.store.get("spawned_by")})


# -- child-side transform ------------------------------------------------------------
class Stamp(IpcMiddleware):
    name = "stamp"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def outbound(self, msg: Message) -> Message | None:
        if msg.type != "log" or not isinstance(msg.payload, dict):
            return msg
        p = dict(msg.payload)
        p["message"] = f"{self.prefix} {p.get('message', '')}"
        p["ts"] = time.time()
        return replace_msg(msg, payload=p)


def stamp(prefix: str) -> Stamp:
    return Stamp(prefix)


# -- the encrypt/decrypt pair -------------------------------------------------------
def _stream(key: bytes, nonce: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(key + nonce + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


class Sealer(IpcMiddleware):
    """Child half seals ``secret_*`` store values; the launcher half opens them."""
    name = "sealer"

    def __init__(self, info: SpawnInfo | None = None, key: str | None = None) -> None:
        self.key = bytes.fromhex(key) if key else secrets.token_bytes(32)

    def child_spec(self) -> dict[str, Any]:
        return {"factory": "sandbox.demos.spawn_middleware:sealer",
                "params": {"key": self.key.hex()}}

    def seal(self, value: Any) -> dict[str, str]:
        import json
        plain = json.dumps(value).encode()
        nonce = secrets.token_bytes(12)
        ct = bytes(a ^ b for a, b in zip(plain, _stream(self.key, nonce, len(plain))))
        tag = hmac.new(self.key, nonce + ct, hashlib.sha256).hexdigest()
        return {"sealed": base64.b64encode(nonce + ct).decode(), "tag": tag}

    def open(self, sealed: Any) -> Any:
        import json
        raw = base64.b64decode(sealed["sealed"])
        nonce, ct = raw[:12], raw[12:]
        expected = hmac.new(self.key, nonce + ct, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sealed["tag"], expected):
            raise ValueError("sealed value fails its tag")
        return json.loads(bytes(a ^ b for a, b in zip(ct, _stream(self.key, nonce, len(ct)))))

    def _apply(self, msg: Message, fn: Any) -> Message:
        p = msg.payload
        if msg.type == "store_put" and isinstance(p, dict) \
                and str(p.get("key", "")).startswith("secret_"):
            return replace_msg(msg, payload={**p, "value": fn(p["value"])})
        if msg.type == "final_store" and isinstance(p, dict) and isinstance(p.get("store"), dict):
            store = {k: fn(v) if k.startswith("secret_") else v for k, v in p["store"].items()}
            return replace_msg(msg, payload={**p, "store": store})
        return msg

    def outbound(self, msg: Message) -> Message | None:
        return self._apply(msg, self.seal)

    def inbound(self, msg: Message) -> Message | None:
        return self._apply(msg, self.open)


def sealer(key: str) -> Sealer:
    return Sealer(key=key)


class WireTap(IpcMiddleware):
    """Launcher side only: remembers store_put values as they came off the wire."""
    name = "wiretap"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def inbound(self, msg: Message) -> Message | None:
        if msg.type in ("store_put", "final_store"):
            self.seen.append({"type": msg.type, "payload": msg.payload})
        return msg


# -- the demo ------------------------------------------------------------------------
def run_demo(out=print) -> bool:
    """Spawn with middleware and hooks, verify, print the summary. True when all pass."""
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy.compare import is_narrower_or_equal

    launcher = Launcher()
    tap = WireTap()
    for mw in (Metrics, child("sandbox.demos.spawn_middleware:stamp", prefix="[child]"),
               redaction(["password"], values=[SECRET]), Sealer, tap, HmacAuth):
        launcher.use(mw)
    hook_log: dict[str, Any] = {"after": [], "messages": 0, "tightened": None}

    def before(req: Any) -> None:
        d = req.target.to_dict()
        d["store"]["spawned_by"] = "spawn_middleware demo"
        req.target = d
        old = req.policy
        req.policy = old.replace(limits=dataclasses.replace(old.limits, wall=60.0))
        hook_log["tightened"] = (old.limits.wall, req.policy.limits.wall,
                                 is_narrower_or_equal(req.policy, old)[0])

    def after(result: Any, info: SpawnInfo) -> None:
        hook_log["after"].append(result.status)

    def on_message(msg: Any, info: Any) -> None:
        hook_log["messages"] += 1
    launcher.before_spawn(before)
    launcher.after_spawn(after)
    launcher.after_spawn(after)              # idempotent: still runs once per spawn
    launcher.on_child_message(on_message)
    raw: list[Any] = []
    launcher.on("*", lambda msg, info: raw.append(msg.to_obj()))

    result = launcher.spawn(Workflow.from_dict(WORKFLOW))
    s, m = result.store, result.metrics or {}
    inbound = m.get("messages", {}).get("in", {})
    logs = [log for log in result.logs if log.get("message", "").startswith("[child]")]
    sealed_puts = [x["payload"]["value"] for x in tap.seen
                   if x["type"] == "store_put" and x["payload"]["key"] == "secret_token"]

    launcher.remove_hook(before)
    loosen = launcher.before_spawn(lambda req: setattr(req, "policy", req.policy.replace(
        network=dataclasses.replace(req.policy.network, mode="host"))))
    refused = launcher.spawn(Workflow.from_dict(WORKFLOW))
    launcher.remove_hook(loosen)

    checks = [
        ("run finished ok", result.status == "ok", f"{result.status} {result.reason}".strip()),
        ("before_spawn rewrote the workflow", s.get("spawned_by") == "spawn_middleware demo",
         f"spawned_by={s.get('spawned_by')!r}"),
        ("before_spawn tightened the policy", hook_log["tightened"] == (120.0, 60.0, True),
         f"wall {hook_log['tightened']}"),
        ("a loosening before_spawn hook is refused", refused.status == "setup_error"
         and "network.mode" in refused.reason, refused.reason[:90]),
        ("after_spawn ran once per spawn (registered twice)",
         hook_log["after"] == ["ok", "setup_error"], f"{hook_log['after']}"),
        ("on_child_message saw every message", hook_log["messages"] == sum(inbound.values())
         and hook_log["messages"] > 0, f"{hook_log['messages']} messages"),
        ("transform: logs prefixed and stamped in the child",
         len(logs) == len(result.logs) == 2 and all(isinstance(x.get("ts"), float) for x in logs),
         f"{[x['message'][:30] for x in logs]}"),
        ("redaction: the secret never left the child", SECRET not in repr(raw)
         and SECRET not in repr(tap.seen) and s.get("password") == "[REDACTED]",
         f"password={s.get('password')!r}"),
        ("encryption: sealed on the wire, opened in the parent",
         bool(sealed_puts) and all("sealed" in v for v in sealed_puts)
         and "tok-xxxxxxxx" not in repr(tap.seen)
         and s.get("secret_token") == {"token": "tok-xxxxxxxx", "scopes": ["read", 2]},
         f"wire: {str(sealed_puts[:1])[:48]}..."),
        ("HMAC: every frame verified, none rejected",
         m.get("auth", {}).get("rejected") == 0 and not result.rejected
         and m.get("auth", {}).get("verified", 0) >= sum(inbound.values()), f"{m.get('auth')}"),
        ("metrics: per type and direction, bytes, duration",
         inbound.get("log") == 2 and inbound.get("progress") == 1
         and m["bytes"]["in"]["store_put"] > 0 and m["spawn_duration"] > 0,
         f"in={inbound}"),
        ("typed values kept", s.get("doubled") == [3.0, 5.0, 6.0]
         and type(s.get("count")) is int and type(s["doubled"][0]) is float,
         f"doubled={s.get('doubled')} count={s.get('count')!r}"),
    ]
    out(f"spawn_middleware demo: run {result.run_id} under policy {result.policy!r}, "
        f"{result.wall_time * 1000:.0f} ms, layers: {', '.join(result.layers)}")
    for name, ok, detail in checks:
        out(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    passed = sum(bool(ok) for _, ok, _ in checks)
    out(f"verification: {passed}/{len(checks)} checks passed")
    return passed == len(checks)
