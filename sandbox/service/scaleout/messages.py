"""The two shapes that cross Redis: a Job (server -> worker, one Dramatiq
message per attempt) and a Report (worker -> server, one stream entry).

Both are pydantic models, validated on receipt: the server treats a report as
data from another host (its file names are checked again before anything is
written, and a report for an attempt that is no longer current changes
nothing).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_CHUNK = 512 * 1024     # bytes of output file content in one report


class InputFile(BaseModel):
    name: str
    content_b64: str
    executable: bool = False


class Job(BaseModel):
    run_id: str
    attempt: int = Field(ge=1)
    kind: Literal["exec", "workflow"]
    request: dict[str, Any]           # the stored request (no secret values)
    token_id: str
    token_name: str
    ceiling: str | None               # None only with `admin` (tenancy.ceiling_name)
    admin: bool = False
    has_secrets: bool = False         # the values wait under keys.secrets(run_id), never here
    files: list[InputFile] = []
    lease_ms: int = Field(ge=200)
    dispatched_at: float = 0.0        # the server's clock when it enqueued the message
    claim_ms: float = 0.0             # the server's work for this message before the enqueue


ReportType = Literal["started", "stdout", "stderr", "message", "log", "denied",
                     "exit", "file", "audit_file", "finish", "refused"]


class Report(BaseModel):
    run_id: str
    attempt: int
    host: str
    type: ReportType
    data: dict[str, Any]
    at: float

    def encode(self) -> dict[str, str]:
        return {"r": self.model_dump_json()}

    @classmethod
    def decode(cls, fields: dict[bytes, bytes]) -> "Report":
        return cls.model_validate_json(fields[b"r"])
