"""An action whose exception message is made of terminal escapes (tests/test_printable.py)."""
from sandbox.workflow import ActionContext, action


@action("hostile_error")
def hostile_error(ctx: ActionContext) -> None:
    raise ValueError("\x1b]0;pwned\x07\x1b[2J\u009b\rOVER \u202eexe.txt")
