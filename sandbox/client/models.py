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
    """One output of a run: `kind` is file, link (another name of the file `target`
    names), dir, symlink or other; only `file` is downloaded (a symlink the run
    planted is never followed). `path` is text (bytes that are not UTF-8 as
    `\\xNN`); `href`, the name's bytes percent-encoded, names it exactly."""
    path: str
    size: int
    kind: str
    allocated: int = 0          # bytes it holds on the server's disk (size: apparent)
    href: str | None = None
    target: str | None = None   # for a link: the href of the file's first name

    @property
    def name(self) -> str:
        """The exact name (surrogate-escaped bytes where not UTF-8), for a local path."""
        return local_name(self.href, self.path)


def local_name(href: str | None, path: str) -> str:
    """The name an entry stands for, exactly: its `href` decoded to the name's bytes (a
    name that is not UTF-8 is listed as text with `\\xNN`), else its `path`."""
    from sandbox.service.files import from_href    # the service's own reading of it
    return from_href(href) if href else path


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
        href, target = it.get("href"), it.get("target")
        out.append(FileEntry(path=it["path"], size=int(it.get("size") or 0),
                             kind=str(it.get("kind") or "other"),
                             allocated=int(it.get("allocated") or 0),
                             href=href if isinstance(href, str) else None,
                             target=target if isinstance(target, str) else None))
    return out
