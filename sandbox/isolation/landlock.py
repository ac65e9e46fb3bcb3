"""Placeholder: being written. Raises so nothing runs silently without it."""
from sandbox.errors import SetupError
from sandbox.isolation.context import ContainContext


def apply(ctx: ContainContext) -> None:
    raise SetupError("landlock", "not implemented yet")
