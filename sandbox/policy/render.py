"""Policies back to text: TOML for `sandbox policy show`, a one-line summary for `check`.

The TOML written here loads back (through `parse_policy`) to the same policy,
so `sandbox policy show X > y.toml` is a way to flatten an `extends` chain.
"""
from __future__ import annotations

import json
from typing import Any

from sandbox.policy.model import Policy
from sandbox.policy.spec import TABLES
from sandbox.policy.units import format_duration, format_size


def _toml_escape(ch: str) -> str:
    if ch.isprintable():
        return ch
    cp = ord(ch)
    if 0xD800 <= cp <= 0xDFFF:
        raise ValueError("a string that is not valid Unicode has no TOML form")
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # A JSON string is a valid TOML basic string, as long as no \uD800-style
        # surrogate escapes appear (TOML forbids them): keep non-ASCII as is, but
        # escape what a terminal would act on (DEL, C1 controls, bidi overrides:
        # JSON escapes only C0), so printing a policy is safe (issue 10.12).
        text = json.dumps(v, ensure_ascii=False)
        return text if text.isprintable() else "".join(map(_toml_escape, text))
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        return "[\n" + "".join(f"    {_toml_value(x)},\n" for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def limit_text(key: str, value: Any) -> str:
    if value is None:
        return "unlimited"
    if key in ("cpu", "wall", "monitor_cpu"):
        return format_duration(float(value))
    if key in ("memory", "file_size"):
        return format_size(int(value))
    return str(value)


def to_toml(policy: Policy) -> str:
    d = policy.to_dict()
    lines = [f"name = {_toml_value(d['name'])}"]
    if d["description"]:
        lines.append(f"description = {_toml_value(d['description'])}")
    lines.append(f"best_effort = {_toml_value(d['best_effort'])}")
    for table, keys in TABLES.items():
        lines += ["", f"[{table}]"]
        for key in keys:
            v = d[table].get(key)
            if table == "limits":
                text = v if key in ("processes", "open_files") and v is not None else limit_text(key, v)
                lines.append(f"{key} = {_toml_value(text)}")
            elif key in ("tmp_size", "output_size"):
                lines.append(f"{key} = {_toml_value(format_size(v))}")
            else:
                lines.append(f"{key} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def notes(policy: Policy) -> list[str]:
    """What a valid policy leaves to the caller to know (`sandbox policy check`)."""
    out = []
    if policy.audit.files == "none":
        out.append('[audit] files = "none": a deny inside a writable tree (and a '
                   "credential store's mask there) holds by its mount alone: a denied "
                   "file the host replaces there during a run (a rename over it), or one "
                   "created later, shows through (inside a read-only tree Landlock "
                   'refuses it too); "denied" has the monitor perform the opens there '
                   "(docs/threat-model.md)")
    return out


def summary(policy: Policy) -> str:
    fs = policy.filesystem
    n = len(fs.read) + len(fs.write) + len(fs.exec) + len(fs.deny)
    lim = " ".join(f"{k}={limit_text(k, getattr(policy.limits, k))}"
                   for k in TABLES["limits"] if getattr(policy.limits, k) is not None)
    return (f"{policy.name}: {n} filesystem rules ({len(fs.read)} read, {len(fs.write)} write, "
            f"{len(fs.exec)} exec, {len(fs.deny)} deny), network {policy.network.mode}, "
            f"syscalls {policy.syscalls.profile}/{policy.syscalls.on_violation}, "
            f"limits {lim or 'none'}" + (", best_effort" if policy.best_effort else ""))
