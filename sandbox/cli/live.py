"""`sandbox run`'s live view: a progress bar from the action's `progress`
messages and, with --follow, its log records as they arrive.

An action reports progress with ``ctx.send("progress", {"done": 3, "of": 10,
"message": "..."})`` (every key optional). Everything shown comes from the
sandboxed child, so it is untrusted: numbers are used only when they are
finite, non-negative numbers, and text goes through `printable()` (no
terminal control sequences reach the caller's terminal) and is clipped.
The bar uses `rich` and is drawn on stderr only when stderr is a terminal;
--follow lines go to stderr in any case, stdout stays the summary or JSON.
"""
from __future__ import annotations

import math
import sys
from typing import Any, TextIO

from sandbox.printable import printable

MAX_TEXT = 200


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) and v >= 0 else None


def _text(v: Any) -> str:
    """At most MAX_TEXT characters of `v`, clipped before they are escaped (escaping
    only lengthens): the child chooses the length, and escaping a whole 1 MiB text
    to show 200 characters of it cost ~0.3 s of the launcher's CPU per frame."""
    text = v if isinstance(v, str) else str(v)
    return printable(text[:MAX_TEXT])[:MAX_TEXT]


class LiveView:
    def __init__(self, launcher: Any, *, follow: bool, bar: bool,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.follow = follow
        self.progress: Any = None
        self.task: Any = None
        if bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TaskProgressColumn(),
                                     console=Console(file=self.stream), transient=True)
            self.task = self.progress.add_task("starting", total=None)
        launcher.on("progress", self.on_progress)
        launcher.on("log", self.on_log)

    def __enter__(self) -> LiveView:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_progress(self, msg: Any, info: Any) -> None:
        p = msg.payload if isinstance(msg.payload, dict) else {}
        done, total = _number(p.get("done")), _number(p.get("of"))
        text = _text(p["message"]) if "message" in p else None
        if self.progress is not None:
            kw: dict[str, Any] = {}
            if done is not None:
                kw["completed"] = done
            if total is not None:
                kw["total"] = total
            if text is not None:
                kw["description"] = text
            self.progress.update(self.task, **kw)
        elif self.follow:
            shown = f"{done:g}/{total:g}" if done is not None and total is not None else \
                (f"{done:g}" if done is not None else "")
            self._line(f"progress {shown} {text or ''}".rstrip())

    def on_log(self, msg: Any, info: Any) -> None:
        if not self.follow:
            return
        p = msg.payload if isinstance(msg.payload, dict) else {}
        level = _text(p.get("level", "info")).upper()[:8]
        self._line(f"{level:<7} {_text(p.get('message', ''))}")

    def _line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


def parse_store(pairs: list[str]) -> dict[str, Any]:
    """--store KEY=VALUE: VALUE as JSON when it parses (42, true, [1,2], {"a":1},
    "text"), else the plain string."""
    from sandbox.errors import InputError
    from sandbox.workflow.model import parse_json
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--store {pair!r}: expected KEY=VALUE")
        try:
            out[key] = parse_json(value, source=f"--store {key}")
        except Exception:
            out[key] = value
    return out
