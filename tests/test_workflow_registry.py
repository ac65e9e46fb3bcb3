"""Action registry: names, module:function references, unknown names."""
from __future__ import annotations

import textwrap

import pytest

from sandbox.errors import WorkflowError
from sandbox.workflow import Registry, resolve_action
from sandbox.workflow.registry import default_registry, import_modules


def test_register_with_and_without_name():
    reg = Registry()

    @reg.action("greet")
    def a(ctx):
        pass

    @reg.action
    def plain(ctx):
        pass

    @reg.action()
    def empty_parens(ctx):
        pass

    assert reg.resolve("greet") is a
    assert reg.resolve("plain") is plain
    assert reg.resolve("empty_parens") is empty_parens
    assert reg.names() == ["empty_parens", "greet", "plain"]
    assert "greet" in reg and "nope" not in reg


def test_conflicting_registration_is_refused():
    reg = Registry()
    reg.register("x", lambda ctx: None)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x", print)


def test_reregistering_same_function_is_allowed():
    reg = Registry()

    def f(ctx):
        pass
    reg.register("f", f)
    reg.register("f", f)
    assert reg.resolve("f") is f


@pytest.mark.parametrize("bad", ["", "  ", "a:b", 3])
def test_bad_names_refused(bad):
    with pytest.raises(ValueError):
        Registry().register(bad, lambda ctx: None)


def test_unknown_name_lists_registered():
    reg = Registry()
    reg.register("known", lambda ctx: None)
    with pytest.raises(WorkflowError) as ei:
        reg.resolve("x")
    msg = str(ei.value)
    assert "unknown action 'x'" in msg and "registered: known" in msg
    assert "module:function" in msg


@pytest.fixture
def action_module(tmp_path, monkeypatch):
    """A fresh importable module (unique name) that registers one action."""
    name = f"wf_actions_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
        from sandbox.workflow import action

        @action("{name}_registered")
        def registered(ctx):
            return {{"who": "registered"}}

        def plain(ctx):
            return {{"who": "plain"}}

        class Holder:
            @staticmethod
            def method(ctx):
                return None

        NOT_CALLABLE = 5
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_module_function_reference(action_module):
    fn = resolve_action(f"{action_module}:plain", Registry())
    assert fn(None) == {"who": "plain"}
    assert resolve_action(f"{action_module}:Holder.method", Registry())(None) is None


def test_importing_module_registers_its_actions(action_module):
    assert f"{action_module}_registered" not in default_registry
    import_modules([action_module])
    assert resolve_action(f"{action_module}_registered")(None) == {"who": "registered"}


@pytest.mark.parametrize("ref, what", [
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("{m}:missing", "has no attribute 'missing'"),
    ("{m}:NOT_CALLABLE", "is a int, not a callable"),
])
def test_module_function_errors(action_module, ref, what):
    with pytest.raises(WorkflowError, match=what):
        resolve_action(ref.format(m=action_module), Registry())


def test_import_modules_reports_missing_module():
    with pytest.raises(WorkflowError, match="imports: cannot import module 'no_such_mod_abc'"):
        import_modules(["no_such_mod_abc"])
