"""Pure shaping of API data for the templates: formatting, the setup chart's
geometry, usage against limits, audit filters and per-directory counts, the
policy diff. No I/O here, so each piece is tested without a server.

Everything returned is plain data; the templates escape every string as text
(Jinja2 autoescape), so a value a run chose can never become markup.
"""
from __future__ import annotations

import difflib
import math
import posixpath
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

FINAL = {"ok", "error", "timeout", "limit_exceeded", "signaled", "violation",
         "setup_error", "cancelled", "lost"}


def when(ts: float | None) -> str:
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def size(value: float | int | None) -> str:
    if value is None:
        return "—"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def duration(run: dict[str, Any]) -> float | None:
    start, end = run.get("started_at"), run.get("finished_at")
    if start and end:
        return max(0.0, end - start)
    result = run.get("result") or {}
    return result.get("wall_time")


def ending(run: dict[str, Any]) -> str:
    """Exit code or signal, as the runs list shows it."""
    result = run.get("result") or {}
    if result.get("signal"):
        return f"signal {result['signal']}"
    if result.get("exit_code") is not None:
        return f"exit {result['exit_code']}"
    return "—"


def what(run: dict[str, Any]) -> str:
    """A run's workflow name or program line (data from the submitter: escaped
    by the template like everything else)."""
    if run.get("workflow"):
        return str(run["workflow"])
    argv = run.get("argv") or []
    line = " ".join(str(a) for a in argv)
    return line if len(line) <= 120 else line[:119] + "…"


# --- the setup chart ---------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    label: str
    start_ms: float
    ms: float
    x: float       # SVG user units, 0..CHART_W
    width: float
    y: float


CHART_W = 600.0
ROW_H = 18.0
MAX_MS = 1e9         # about 11 days: a setup figure beyond it is not drawn


def _bar(label: str, start: float, ms: float, total: float, y: float) -> Bar:
    x = min(CHART_W, CHART_W * start / total)
    width = max(1.0, min(CHART_W * ms / total, CHART_W - x))
    return Bar(label, start, ms, x, width, y)


def setup_bars(timings: dict[str, float] | None) -> list[Bar]:
    """The setup breakdown as consecutive segments: `timings` holds milestones in
    ms counted from the launcher's call (and `layer.<name>` durations inside
    PID 1, drawn after them at their own scale)."""
    if not timings:
        return []
    # The figures come from the run's result: keep finite, sane ones only
    # (a NaN, an infinity or 1e308 must not stretch or break the drawing).
    clean = {str(k): float(v) for k, v in timings.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)
             and math.isfinite(v) and 0 <= v <= MAX_MS}
    marks = sorted(((k, v) for k, v in clean.items() if not k.startswith("layer.")),
                   key=lambda kv: kv[1])
    segs: list[tuple[str, float, float]] = []
    prev = 0.0
    for name, at in marks:
        segs.append((name, prev, max(0.0, at - prev)))
        prev = at
    layers = [(k, v) for k, v in clean.items() if k.startswith("layer.")]
    total = max([s + d for _, s, d in segs] + [sum(v for _, v in layers)] + [0.001])
    bars = []
    for i, (name, start, ms) in enumerate(segs):
        bars.append(_bar(name, start, ms, total, i * ROW_H))
    offset = 0.0
    for j, (name, ms) in enumerate(layers):
        bars.append(_bar(name, offset, ms, total, (len(segs) + j) * ROW_H))
        offset += ms
    return bars


# --- usage against limits ----------------------------------------------------

@dataclass(frozen=True)
class Usage:
    what: str
    used: str
    limit: str
    mechanism: str
    fraction: float | None  # 0..1 for the meter, None when there is no limit


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def usage(result: dict[str, Any], limits: dict[str, Any]) -> list[Usage]:
    applied = result.get("limits_applied") or {}
    output = result.get("output") or {}
    rows = [
        ("CPU", _num(result.get("cpu_time")), _num(limits.get("cpu")), "cpu", seconds),
        ("wall time", _num(result.get("wall_time")), _num(limits.get("wall")), "wall", seconds),
        ("peak memory", _num(result.get("max_rss")), _num(limits.get("memory")), "memory", size),
        ("output files", _num(output.get("files")), _num(limits.get("output_inodes")),
         "output_inodes", lambda v: "—" if v is None else f"{v:.0f}"),
        ("output size", _num(output.get("bytes")), _num(limits.get("output_size")),
         "output_size", size),
        ("open files (limit)", None, _num(limits.get("open_files")), "open_files",
         lambda v: "—" if v is None else f"{v:.0f}"),
        ("processes (limit)", None, _num(limits.get("processes")), "processes",
         lambda v: "—" if v is None else f"{v:.0f}"),
    ]
    out = []
    for label, used, limit, key, fmt in rows:
        frac = None
        if used is not None and limit:
            frac = max(0.0, min(1.0, used / limit))
        out.append(Usage(label, fmt(used), fmt(limit), str(applied.get(key, "")), frac))
    return out


def policy_limits(doc: dict[str, Any]) -> dict[str, float]:
    """Limits from GET /v1/policies/{name}: its `limits` and `filesystem`
    tables (as a document, nested under `policy`, or in its `toml` text),
    with units ("10m", "4GiB") read by the policy loader's own parsers.
    Anything unreadable is left out (shown as no limit), never guessed."""
    from sandbox.policy import units
    nested = doc.get("policy")
    body: dict[str, Any] = nested if isinstance(nested, dict) else doc
    if "limits" not in body and isinstance(doc.get("toml"), str):
        import tomllib
        try:
            body = tomllib.loads(doc["toml"])
        except (tomllib.TOMLDecodeError, ValueError):
            body = {}
    raw_limits, raw_fs = body.get("limits"), body.get("filesystem")
    limits: dict[str, Any] = raw_limits if isinstance(raw_limits, dict) else {}
    fs: dict[str, Any] = raw_fs if isinstance(raw_fs, dict) else {}
    parsers = {"cpu": units.parse_duration, "wall": units.parse_duration,
               "memory": units.parse_size, "file_size": units.parse_size,
               "processes": units.parse_count, "open_files": units.parse_count}
    out: dict[str, float] = {}
    for key, parse in parsers.items():
        if limits.get(key) is not None:
            try:
                out[key] = float(parse(limits[key]))
            except (ValueError, TypeError, OverflowError):
                pass
    for key, parse in (("output_size", units.parse_size), ("output_inodes", units.parse_count)):
        if fs.get(key) is not None:
            try:
                out[key] = float(parse(fs[key]))
            except (ValueError, TypeError, OverflowError):
                pass
    return out


# --- the audit tab -----------------------------------------------------------

def filter_audit(records: list[dict[str, Any]], *, denied: bool, operation: str,
                 search: str) -> list[dict[str, Any]]:
    out = []
    for rec in records:
        if denied and rec.get("verdict") != "denied":
            continue
        if operation and rec.get("operation") != operation:
            continue
        if search and search not in str(rec.get("path", "")):
            continue
        out.append(rec)
    return out


def by_directory(records: list[dict[str, Any]], limit: int = 25) -> list[tuple[str, int, int]]:
    """(directory, allowed, denied) for the most-touched directories."""
    allowed: Counter[str] = Counter()
    denied: Counter[str] = Counter()
    for rec in records:
        directory = posixpath.dirname(str(rec.get("path", ""))) or "/"
        n = int(rec.get("count") or 1)
        (denied if rec.get("verdict") == "denied" else allowed)[directory] += n
    total = allowed + denied
    return [(d, allowed[d], denied[d]) for d, _ in total.most_common(limit)]


def operations(records: list[dict[str, Any]]) -> list[str]:
    return sorted({str(r.get("operation")) for r in records if r.get("operation")})


# --- the learn tab -----------------------------------------------------------

def policy_text(doc: dict[str, Any] | None) -> str:
    """A policy document from the API (`extends` already applied) rendered as
    TOML by the policy renderer; empty when it cannot be read back."""
    if not isinstance(doc, dict):
        return ""
    from sandbox.errors import InputError
    from sandbox.policy.loader import parse_policy_data
    from sandbox.policy.render import to_toml
    data = {k: v for k, v in doc.items() if k not in ("source", "extends")}
    try:
        return to_toml(parse_policy_data(data, file="<policy>"))
    except (InputError, ValueError, TypeError):
        return ""


def suggested_text(toml_text: str) -> str:
    """The suggested policy (its `extends` names built-in policies only: the
    suggester writes them) rendered like policy_text; empty if unreadable."""
    if not toml_text:
        return ""
    from sandbox.errors import InputError
    from sandbox.policy.loader import parse_policy
    from sandbox.policy.render import to_toml
    try:
        return to_toml(parse_policy(toml_text, file="<suggested>"))
    except (InputError, ValueError, TypeError):
        return ""


def policy_diff(used: str, suggested: str, used_name: str) -> list[tuple[str, str]]:
    """Unified diff lines with their kind (add, del, hunk, ctx) for styling."""
    lines = []
    for line in difflib.unified_diff(used.splitlines(), suggested.splitlines(),
                                     fromfile=f"{used_name} (used)", tofile="suggested",
                                     lineterm=""):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append((kind, line))
    return lines
