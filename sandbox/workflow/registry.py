"""The action registry: from the name a workflow uses to the function to call.

A workflow definition names actions by string because it crosses into a
fresh child process, where only names survive (as in GoStage). A name is
either one registered with ``@action`` or an importable
``package.module:function``; the latter needs no registration and no
``imports`` entry, the former needs the registering module imported first
(see `import_modules`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, overload

from sandbox.errors import WorkflowError

if TYPE_CHECKING:
    from sandbox.workflow.context import ActionContext

ActionFn = Callable[["ActionContext"], "Mapping[str, Any] | None"]


class Registry:
    """Maps action names to callables ``fn(ctx) -> None | dict``."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionFn] = {}

    def register(self, name: str, fn: ActionFn) -> ActionFn:
        """Register `fn` under `name`.

        Registering the same function again (a module imported twice, e.g. as
        ``__main__`` and by name) is allowed; a *different* function under a
        taken name is a ValueError, since one of the two would silently lose.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"action name must be a non-empty string, got {name!r}")
        if ":" in name:
            raise ValueError(f"action name {name!r} must not contain ':' "
                             "(reserved for 'module:function' references)")
        if not callable(fn):
            raise TypeError(f"action {name!r}: {fn!r} is not callable")
        old = self._actions.get(name)
        if old is not None and old is not fn and _qualified(old) != _qualified(fn):
            raise ValueError(f"action name {name!r} is already registered to {_qualified(old)}")
        self._actions[name] = fn
        return fn

    @overload
    def action(self, name_or_fn: ActionFn) -> ActionFn: ...
    @overload
    def action(self, name_or_fn: str | None = None) -> Callable[[ActionFn], ActionFn]: ...

    def action(self, name_or_fn: Any = None) -> Any:
        """Decorator: ``@reg.action``, ``@reg.action()`` or ``@reg.action("name")``.

        Without a name the function's ``__name__`` is used.
        """
        if callable(name_or_fn):
            return self.register(name_or_fn.__name__, name_or_fn)

        def deco(fn: ActionFn) -> ActionFn:
            return self.register(name_or_fn or fn.__name__, fn)
        return deco

    def names(self) -> list[str]:
        return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def resolve(self, name: str) -> ActionFn:
        """A registered name first, else ``package.module:function`` imported now."""
        fn = self._actions.get(name)
        if fn is not None:
            return fn
        if ":" in name:
            return _import_ref(name)
        known = ", ".join(self.names()) or "none"
        raise WorkflowError(f"unknown action {name!r} (registered: {known}; "
                            "or use 'package.module:function', or list the module "
                            "that registers it under \"imports\")")


def _qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _import_ref(ref: str) -> ActionFn:
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise WorkflowError(f"action {ref!r}: expected 'package.module:function'")
    module = _import(module_name, f"action {ref!r}")
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise WorkflowError(f"action {ref!r}: module {module_name!r} has no "
                                f"attribute {attr_path!r}") from None
    if not callable(target):
        raise WorkflowError(f"action {ref!r}: {attr_path!r} is a "
                            f"{type(target).__name__}, not a callable")
    return target


def _import(module_name: str, what: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise WorkflowError(f"{what}: cannot import module {module_name!r}: "
                            f"{type(e).__name__}: {e}") from None


def import_modules(modules: Iterable[str]) -> None:
    """Import each module (a workflow's ``imports``) so its ``@action``s register.

    Only ImportError becomes a WorkflowError; any other exception raised by
    the module's own code propagates, as it is a bug in that module.
    """
    for name in modules:
        _import(name, "imports")


default_registry = Registry()


def action(name_or_fn: Any = None) -> Any:
    """Register an action in the default registry: ``@action`` or ``@action("name")``."""
    return default_registry.action(name_or_fn)


def resolve_action(name: str, registry: Registry | None = None) -> ActionFn:
    """Resolve `name` in `registry` (the default one if None)."""
    return (registry or default_registry).resolve(name)
