"""Subcommands are modules found by name; a missing one is simply not offered."""
from __future__ import annotations

import importlib
from types import ModuleType


def optional_module(name: str) -> ModuleType | None:
    """Import `name`, or None if that very module does not exist (an ImportError
    raised *inside* it is a bug and propagates)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None
