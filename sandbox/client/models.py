"""Typed answers: the service's own pydantic models (sandbox/service/models.py,
the contract of docs/service.md), validated on arrival.

Those models only grow, and they ignore fields they do not know, so a client
older than its server still reads it. The few shapes the service has no model
for yet are small dataclasses here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.service.models import FINAL_STATES, RunList, RunView

from sandbox.client import errors

__all__ = ["FINAL_STATES", "FileEntry", "RunList", "RunView", "file_list", "is_final", "run",
           "page"]


@dataclass(frozen=True)
class FileEntry:
    """One output of a run: `kind` is file, dir, symlink or other; only `file`
    can be downloaded (a link the run planted is never followed)."""
    path: str
    size: int
    kind: str


def _validate(model: Any, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except Exception as exc:    # pydantic.ValidationError: the server broke the contract
        raise errors.ServerError(f"the server's answer is not a {model.__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from exc


def run(data: Any) -> RunView:
    return _validate(RunView, data)


def page(data: Any) -> RunList:
    return _validate(RunList, data)


def is_final(view: RunView) -> bool:
    return view.status in FINAL_STATES


def file_list(data: Any) -> list[FileEntry]:
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise errors.ServerError("the server's file list has no 'items' list")
    out = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("path"), str):
            raise errors.ServerError(f"a file entry without a path: {str(it)[:200]}")
        out.append(FileEntry(path=it["path"], size=int(it.get("size") or 0),
                             kind=str(it.get("kind") or "other")))
    return out
