"""The filesystem plan: the policy's `[filesystem]` rules made concrete for one run.

Built on the launcher side by `sandbox.policy.planner.build_plan` from a
*resolved* policy (variables substituted, globs expanded against the host),
then handed to the sandboxee. Both kernel layers consume this one plan: the
mount layer binds each rule's path into the new root (read-only unless
`write`) and masks each `masks` entry; the Landlock layer grants each rule's
rights beneath its path. So the view and the Landlock domain cannot disagree
with each other, nor with `decide`, which reads the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from sandbox import plain
from sandbox.jsontypes import JSON, JSONObject


@dataclass(frozen=True)
class FsRule:
    path: str            # absolute, normalised host path; the same path inside the sandbox
    read: bool = True
    write: bool = False  # implies create and delete beneath it
    exec: bool = False
    rule: str = ""       # the policy rule that granted it, e.g. "filesystem.write: ${OUTPUT}"
    cow: bool = False    # the work directory as an overlay: writes go to the run's upper layer
    # The path's real path when the plan was made (the engine decided on `path` then):
    # the mount table refuses the rule if it resolves elsewhere now. "" = not recorded.
    real: str = ""


@dataclass(frozen=True)
class FsPlan:
    rules: tuple[FsRule, ...] = ()   # parents before children
    masks: tuple[str, ...] = ()      # existing denied paths, hidden in the view
    tmp_size: int = 64 * 1024 * 1024
    scratch_exec: bool = False       # the private /tmp is executable (filesystem.scratch_exec)
    # The run's ${OUTPUT} (set by the launcher): a tmpfs of output_size bytes and
    # output_inodes inodes in the view, copied out inert when the run ends.
    output: str = ""
    output_size: int = 256 * 1024 * 1024
    output_inodes: int = 16384

    def to_dict(self) -> JSONObject:
        rules: list[JSON] = [plain.asdict(r) for r in self.rules]
        masks: list[JSON] = list(self.masks)
        return {"rules": rules, "masks": masks,
                "tmp_size": self.tmp_size, "output": self.output,
                "output_size": self.output_size, "output_inodes": self.output_inodes,
                "scratch_exec": self.scratch_exec}

    @classmethod
    def from_dict(cls, d: Mapping[str, JSON]) -> "FsPlan":
        """The plan `to_dict` made (it crosses to the monitor in the spec); ValueError
        for any other shape."""
        rules, masks = d.get("rules", []), d.get("masks", [])
        if not isinstance(rules, list) or not isinstance(masks, list):
            raise ValueError("fs_plan: rules and masks must be lists")
        return cls(rules=tuple(_rule(r) for r in rules),
                   masks=tuple(_str(m) for m in masks),
                   tmp_size=_int(d.get("tmp_size", 64 << 20)),
                   output=_str(d.get("output", "")),
                   output_size=_int(d.get("output_size", 256 << 20)),
                   output_inodes=_int(d.get("output_inodes", 16384)),
                   scratch_exec=_bool(d.get("scratch_exec", False)))


def _str(v: JSON) -> str:
    if not isinstance(v, str):
        raise ValueError(f"fs_plan: expected a string, got {type(v).__name__}")
    return v


def _int(v: JSON) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"fs_plan: expected an integer, got {type(v).__name__}")
    return v


def _bool(v: JSON) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"fs_plan: expected true or false, got {type(v).__name__}")
    return v


def _rule(r: JSON) -> FsRule:
    if not isinstance(r, dict):
        raise ValueError("fs_plan: a rule must be an object")
    return FsRule(path=_str(r.get("path")), read=_bool(r.get("read", True)),
                  write=_bool(r.get("write", False)), exec=_bool(r.get("exec", False)),
                  rule=_str(r.get("rule", "")), cow=_bool(r.get("cow", False)),
                  real=_str(r.get("real", "")))
