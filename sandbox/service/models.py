"""The one schema of every request and response of the service's /v1 API.

Pydantic models: FastAPI validates every request against them (a 422 that
names the field) and publishes them in the OpenAPI document at /docs. The
Python client and the web UI build against these names: add fields, never
rename or remove one (docs/service.md is the contract).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, field_validator,
                      model_validator)

# Limits on what a request may carry (the body as a whole is capped too: 413).
MAX_ARGV = 4096
MAX_ARG_CHARS = 128 * 1024
MAX_ENV = 256
MAX_ENV_VALUE = 32 * 1024
# every secret value together: each run's outputs are masked with one pattern made
# from them (streams.Secrets), at about a second of CPU per MiB of secrets to make
MAX_SECRET_CHARS = 256 * 1024
MAX_FILES = 256
# An inline policy, every value of it (strings, numbers, list elements, tables) and
# the characters of its strings and keys: reading a policy costs more than linear
# time in its rules (50,000 rules, a 2.5 MB body, cost 31 s of the server's CPU,
# attack probe 2026-12-07), so its size is bounded before it is read. A person's
# policy has dozens of rules; a suggested one, a few hundred.
MAX_INLINE_ITEMS = 4096
MAX_INLINE_CHARS = 1 << 20
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names the service sets itself: a submitter may not override them.
RESERVED_ENV = frozenset({"SANDBOX_IPC_FD", "SANDBOX_RUN_ID", "SANDBOX_OUTPUT", "HOME",
                          "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"})

RunState = Literal["queued", "running", "ok", "error", "timeout", "limit_exceeded", "signaled",
                   "violation", "setup_error", "cancelled", "lost"]
FINAL_STATES: frozenset[str] = frozenset({"ok", "error", "timeout", "limit_exceeded",
                                          "signaled", "violation", "setup_error", "cancelled",
                                          "lost"})


def bounded_policy(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """`doc` when it holds at most MAX_INLINE_ITEMS values and MAX_INLINE_CHARS
    characters; ValueError otherwise. The walk stops at the first value over."""
    if doc is None:
        return doc
    items = chars = 0
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        items += 1
        if isinstance(value, dict):
            chars += sum(len(str(k)) for k in value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            chars += len(value)
        if items > MAX_INLINE_ITEMS or chars > MAX_INLINE_CHARS:
            raise ValueError(f"an inline policy may hold at most {MAX_INLINE_ITEMS} values "
                             f"and {MAX_INLINE_CHARS} characters; register a larger one "
                             "(sandbox policy) and name it")
    return doc


InlinePolicy = Annotated[dict[str, Any] | None, AfterValidator(bounded_policy)]


class Strict(BaseModel):
    """Unknown fields are an error (a typo must not silently do nothing)."""
    model_config = ConfigDict(extra="forbid")


class FileInput(Strict):
    """One input file, base64 in the JSON body (or a multipart part instead).

    `name` is relative to the run's input directory (${WORKDIR}); it may hold
    sub-directories ("src/main.py") but never leave it: no absolute path, no
    '..', no empty or '.' segment, no NUL or control character."""
    name: str = Field(min_length=1, max_length=1024)
    content_b64: str = Field(default="", description="the file's bytes, base64")
    mode: Literal["r", "rx"] = Field(default="r", description="rx: executable (0500)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        from sandbox.service.files import check_input_name
        return check_input_name(v)


MAX_LABEL = 256
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
DEFAULT_QUEUE = "default"          # a run's scale-out queue when its labels name none
# The ceiling of a tenant (non-admin) token made without one, and of an old store row
# that has none: a tenant token never goes without (probe2 finding 6: one made through
# the API had none, and its runs took the host's network and reached Redis).
DEFAULT_CEILING = "default"


class RunRequest(Strict):
    """POST /v1/runs: a program (`argv`) or a workflow (`workflow`), never both."""
    argv: list[str] | None = Field(default=None, description="a program and its arguments")
    workflow: dict[str, Any] | None = Field(default=None,
                                            description="a workflow document (docs/workflows.md)")
    policy: str | None = Field(default=None, max_length=128,
                               description="a built-in or registered policy name (default: the "
                               "token's ceiling, or 'default')")
    policy_inline: InlinePolicy = Field(
        default=None, description="an inline policy document (TOML's shape as JSON); its "
        "`extends` may name only built-in or registered policies")
    stdin: str | None = Field(default=None, description="the program's whole stdin, as text")
    stdin_b64: str | None = Field(default=None, description="the program's whole stdin, base64")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment")
    secret_env: dict[str, str] = Field(
        default_factory=dict, description="environment that reaches the run but is never "
        "stored, echoed in events or written to records")
    store: dict[str, Any] | None = Field(default=None, description="a workflow's initial store")
    files: list[FileInput] = Field(default_factory=list, max_length=MAX_FILES)
    timeout: float | None = Field(default=None, gt=0, le=86400,
                                  description="seconds; may only shorten the policy's wall limit")
    retries: int = Field(default=0, ge=0, le=5,
                         description="re-queue this many times when its executor dies")
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("argv")
    @classmethod
    def _argv(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v or len(v) > MAX_ARGV:
            raise ValueError(f"argv needs 1 to {MAX_ARGV} arguments")
        if sum(len(a) for a in v) > MAX_ARG_CHARS:
            raise ValueError(f"argv is longer than {MAX_ARG_CHARS} characters")
        if any("\0" in a for a in v) or not v[0]:
            raise ValueError("argv: an argument holds a NUL byte, or the program is empty")
        return v

    @field_validator("env", "secret_env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_ENV:
            raise ValueError(f"at most {MAX_ENV} variables")
        for name, value in v.items():
            if not ENV_NAME.match(name):
                raise ValueError(f"{name[:64]!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
            if name in RESERVED_ENV:
                raise ValueError(f"{name} is set by the service and cannot be given")
            if "\0" in value or len(value) > MAX_ENV_VALUE:
                raise ValueError(f"{name}: a NUL byte, or longer than {MAX_ENV_VALUE} characters")
        return v

    @field_validator("secret_env")
    @classmethod
    def _secret_total(cls, v: dict[str, str]) -> dict[str, str]:
        if sum(len(value) for value in v.values()) > MAX_SECRET_CHARS:
            raise ValueError(f"secret values may hold at most {MAX_SECRET_CHARS} characters "
                             "together")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if len(key) > MAX_LABEL or len(value) > MAX_LABEL:
                raise ValueError(f"{key[:64]!r}: labels are at most {MAX_LABEL} characters")
        queue = v.get("queue")
        if queue is not None and not QUEUE_NAME.match(queue):
            # it names a Redis key and a Dramatiq queue: a 100,000-character one made
            # keys of that size, and a queue no worker serves held its run forever
            raise ValueError(f"queue {queue[:64]!r}: a queue is named by letters, digits, "
                             "'-' and '_' (at most 64), as `sandbox worker --queues` takes")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> "RunRequest":
        if (self.argv is None) == (self.workflow is None):
            raise ValueError("give exactly one of argv (a program) or workflow")
        if self.stdin is not None and self.stdin_b64 is not None:
            raise ValueError("give stdin or stdin_b64, not both")
        if self.policy is not None and self.policy_inline is not None:
            raise ValueError("give policy (a name) or policy_inline, not both")
        overlap = set(self.env) & set(self.secret_env)
        if overlap:
            raise ValueError(f"{sorted(overlap)[0]} is in both env and secret_env")
        return self


class Links(BaseModel):
    self: str
    events: str
    files: str
    cancel: str
    audit: str


class RunView(BaseModel):
    """A run as the API shows it (GET /v1/runs/{id}; POST /v1/runs returns it with 202)."""
    id: str
    status: RunState
    kind: Literal["exec", "workflow"]
    token: str = Field(description="the name of the token that submitted it")
    policy: str | None = None
    argv: list[str] | None = None
    workflow: str | None = Field(default=None, description="the workflow's name")
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: float
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    host: str
    attempts: int = 0
    retries: int = 0
    reason: str | None = Field(default=None, description="why it ended, for a non-ok status")
    result: dict[str, Any] | None = Field(
        default=None, description="the RunResult (docs/run-result.md) once it ended")
    links: Links


class RunList(BaseModel):
    items: list[RunView]
    next_cursor: str | None = Field(default=None,
                                    description="pass as ?cursor= for the next page")


class ErrorBody(BaseModel):
    detail: Any


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    queued: int
    running: int


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ceiling: str | None = Field(default=None, max_length=128,
                                description="a policy name no run may exceed; a token that is "
                                f"not an admin always has one ({DEFAULT_CEILING!r} when none "
                                "is given); an admin token may have none")
    max_concurrent: int = Field(default=4, ge=1, le=1024)
    max_queued: int = Field(default=100, ge=0, le=100000)
    rate: float | None = Field(default=None, gt=0, description="submissions per second")
    admin: bool = False
    queues: list[str] | None = Field(
        default=None, max_length=64,
        description="the scale-out queues its runs may name (None: any a live worker serves)")

    @field_validator("queues")
    @classmethod
    def _queues(cls, v: list[str] | None) -> list[str] | None:
        for q in v or ():
            if not QUEUE_NAME.match(q):
                raise ValueError(f"queue {q[:64]!r}: letters, digits, '-' and '_' (at most 64)")
        return sorted(set(v)) if v is not None else None

    @model_validator(mode="after")
    def _tenant_ceiling(self) -> "TokenCreate":
        if not self.admin and not self.ceiling:
            self.ceiling = DEFAULT_CEILING
        return self


class TokenView(BaseModel):
    id: str
    name: str
    ceiling: str | None
    max_concurrent: int
    max_queued: int
    rate: float | None
    admin: bool
    created_at: float
    revoked_at: float | None = None
    queues: list[str] | None = None


class TokenCreated(TokenView):
    token: str = Field(description="the secret, shown once; only its hash is stored")


# -- executors (GET /v1/workers, admin; docs/scaling.md) ------------------------
class QueueInfo(BaseModel):
    name: str
    depth: int                       # messages waiting (broker) or queued runs (local)


class WorkerInfo(BaseModel):
    host: str
    slots: int
    running: int
    queues: list[str]
    up_s: float | None               # seconds since the worker started (None: local)
    heartbeat_age_s: float           # seconds since its last heartbeat


class LeaseInfo(BaseModel):
    run_id: str
    attempt: int
    host: str
    lease_ttl_ms: int | None         # None: no lease (not started yet, or lost)
    lease_age_ms: int | None         # since the last renewal


class WorkersView(BaseModel):
    broker: bool                     # False: the in-process executor of this server
    lease_ms: int | None
    queues: list[QueueInfo]
    workers: list[WorkerInfo]
    leases: list[LeaseInfo]
