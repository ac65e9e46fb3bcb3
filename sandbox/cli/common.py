"""Options and helpers shared by `sandbox exec` and `sandbox run` (and the duration
and age arguments of `gc`, `serve` and `worker`)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
from typing import TYPE_CHECKING, Any, Iterator

# How the CLI starts its one run's monitor. Never a fork of the CLI process: that
# process holds the caller's whole environment, and a workflow's PID 1 does not
# exec (issue 10 finding 4). A fork server would be started, warmed and used once:
# an exec'd monitor costs less for a single run (docs/benchmarks-journal.md).
CLI_START = os.environ.get("SANDBOX_CLI_START", "exec")
# ...unless the process runs in the `sandbox exec` daemon (sandbox.thin.daemon), which
# sets this to its warm fork server, shared by all its runs (sandbox.thin.shared).
CLI_FORKSERVER: Any = None
# ...and to where its runs' history rows go: the daemon writes them (sandbox.thin.relay)
CLI_HISTORY: Any = None
# ...and the pid of the thin client it serves: whose terminal decides an automatic -t
# (sandbox.cli.terminal); None on the cold path, where that is this process
CLI_CALLER_PID: int | None = None
# The signal this process ends by, once all is written: the program's death by ^C or
# ^\ (sandbox.process_end.die_by); None: it exits with its code
CLI_DIE_BY: int | None = None

from sandbox.errors import InputError

if TYPE_CHECKING:
    from sandbox.launcher.early import EarlyMonitor


def early_monitor(stdin: int | None) -> "EarlyMonitor | None":
    """The exec'd monitor of the CLI's one run, started now, before this process imports
    the launcher, the policy engine and the workflow package, so both import at once
    (sandbox/launcher/early.py); its run takes it with `Launcher(early=...)`, and the
    caller `discard`s it in any case. None when runs start elsewhere (the daemon's fork
    server, SANDBOX_CLI_START=forkserver). `stdin`: 0 (relay the caller's) or None."""
    if CLI_FORKSERVER is not None or CLI_START != "exec":
        return None
    from sandbox.launcher.early import EarlyMonitor
    return EarlyMonitor(stdin)

EXIT_TIMEOUT = 124      # as timeout(1)
EXIT_SETUP = 125        # the sandbox could not be set up, or bad input; nothing ran
EXIT_INPUT = 2          # bad input to the subcommands that do not run programs


def duration_arg(text: str) -> float:
    """--timeout: seconds or "500ms"/"10s"/"2m", finite, > 0, within the policy range."""
    from sandbox.policy.units import parse_duration
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def age_arg(text: str) -> float:
    """--older-than, --retain, --lease, --heartbeat: a duration as --timeout takes it, or
    days ("7d"), or zero ("0", "0s")."""
    from sandbox.policy.units import parse_duration
    try:
        if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
            return float(text[:-1]) * 86400.0
        if text.strip() in ("0", "0s"):
            return 0.0
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or days: \"7d\")") from None


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", metavar="NAME|FILE",
                   help="policy name on the search path (strict, default, ...) or a .toml file "
                        "(default: the workflow's own, else 'default')")
    p.add_argument("--timeout", type=duration_arg, metavar="SECONDS",
                   help="wall-clock limit; can only shorten the policy's [limits] wall")
    p.add_argument("--result", metavar="FILE", help="write the RunResult as JSON to FILE")
    p.add_argument("--output", metavar="DIR",
                   help="the run's output directory, ${OUTPUT} in the policy "
                        "(default: $SANDBOX_HOME/runs/RUN_ID/output)")
    p.add_argument("--audit-log", metavar="FILE",
                   help="also write this run's file-access audit records as JSON Lines")
    from sandbox.cli.grants import add_grant_options
    add_grant_options(p)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the run id and how the run ended on stderr "
                        "(see it later with: sandbox runs show RUN_ID)")


def preflight(args: argparse.Namespace) -> None:
    """Every path the run will need is checked BEFORE anything runs, so a typo in
    --result is reported in one line instead of after the program already ran
    (and maybe did something that cannot be repeated). Raises InputError."""
    workdir = getattr(args, "workdir", None)
    if workdir is not None and not os.path.isdir(workdir):
        raise InputError(f"--workdir {workdir}: no such directory")
    if workdir is not None and not os.access(workdir, os.X_OK):
        # as `cd` would say: the program started there and could list nothing
        raise InputError(f"--workdir {workdir}: permission denied (you cannot enter it)")
    if workdir is None and hasattr(args, "workdir"):
        # started in a directory it may not enter (setpriv/su from root's): the view's
        # mount of it failed (EACCES) or, under strict, the run silently began in /
        from sandbox.current_dir import current_dir
        here = current_dir()
        if not os.access(here, os.X_OK):
            raise InputError(f"the current directory {here} is not one you may enter; "
                             "cd elsewhere or give --workdir DIR")
    check_run_paths(args)
    if args.output is not None:
        check_output_dir(args.output)
    check_state_dir()


def check_writable_file(option: str, path: str) -> None:
    """`path` can be written later: opened (never truncated) if it exists, else
    created and removed again. Trying is the only honest check (root passes
    access(2) on /proc, and read-only or full filesystems say so only on open)."""
    if os.path.isdir(path):
        raise InputError(f"{option} {path}: is a directory, expected a file name")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC)
        os.close(fd)
        return
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot create: {exc.strerror}") from None
    os.close(fd)
    os.unlink(path)


def check_output_dir(path: str) -> None:
    """A first check of --output (the launcher validates it fully): an existing
    non-directory, or a place where no directory can be made, is bad input."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(f"--output {path}: exists and is not a directory")
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise InputError(f"--output {path}: {probe} is not a directory")
    if probe != os.path.abspath(path):
        if not os.access(probe, os.W_OK | os.X_OK) or probe.startswith(("/proc", "/sys")):
            raise InputError(f"--output {path}: cannot create a directory in {probe}")


def check_state_dir() -> None:
    """The state directory ($SANDBOX_HOME, else $XDG_STATE_HOME/sandbox, else
    ~/.local/state/sandbox) holds run history, outputs and the audit store."""
    from sandbox.launcher.prepare import state_dir
    path = state_dir()
    # an explicit SANDBOX_HOME is made with its parents; a default one lives under
    # an existing HOME or XDG_STATE_HOME
    anchor = None if os.environ.get("SANDBOX_HOME") else \
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~")
    if anchor is not None and not os.path.isdir(anchor):
        # never make a missing HOME (root with HOME=/nonexistent would create it)
        raise InputError(f"cannot use the state directory {path}: {anchor} does not exist or "
                         "is not a directory (set SANDBOX_HOME to a writable directory)")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise InputError(f"cannot use the state directory {path}: {exc.strerror} (set "
                         "SANDBOX_HOME to a writable directory)") from None


def report_run(args: argparse.Namespace, result: Any) -> None:
    """-v: one line on stderr naming the run, for `sandbox runs show|logs`."""
    if getattr(args, "verbose", False):
        import sys
        print(f"sandbox: run {result.run_id}: {result.status} in {result.wall_time:.3f}s",
              file=sys.stderr)


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--env {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


STDIO_NAMES = ("/dev/stdout", "/dev/stderr")


def check_run_paths(args: argparse.Namespace) -> None:
    """--result and --audit-log become 0600 files of the caller's, reached without
    a link or directory another user controls (`output_path.private_file`; an
    `OutputPathError`, so exit 125 and nothing ran). --output is checked in full
    by the launcher itself, so the API gets the same protection."""
    from sandbox.launcher.output_path import private_file
    for option, path in (("--result", args.result), ("--audit-log", args.audit_log)):
        if path is None:
            continue
        if path in STDIO_NAMES or path.startswith("/dev/fd/"):
            check_writable_file(option, path)   # the caller's own descriptors
        else:
            if os.path.isdir(path):
                raise InputError(f"{option} {path}: is a directory, expected a file name")
            # Kept open: written after the run through this descriptor, never by name
            # (the run may write a directory on the way and plant a link there).
            setattr(args, FD_ATTR[option], private_file(path, what=option, keep=True))


FD_ATTR = {"--result": "result_fd", "--audit-log": "audit_log_fd"}


def _open_checked(path: str, fd: int | None) -> int:
    """The descriptor `check_run_paths` kept for `path`, emptied; or, for the caller's
    own stdio names, `path` opened now."""
    if fd is not None:
        os.ftruncate(fd, 0)
        return fd
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                   | (0 if path in STDIO_NAMES or path.startswith("/dev/fd/")
                      else os.O_NOFOLLOW), 0o600)


def write_result(path: str | None, result: Any, fd: int | None = None) -> None:
    if path:
        with open(_open_checked(path, fd), "w") as f:
            json.dump(result.to_dict(), f, indent=2)
            f.write("\n")


def write_audit_log(path: str | None, result: Any, fd: int | None = None) -> None:
    if not path:
        return
    from sandbox.audit import export_jsonl
    with open(_open_checked(path, fd), "w", encoding="utf-8") as f:
        export_jsonl(result.run_id, f)


def exit_code_for(result: Any) -> int:
    """The exit-code table of `sandbox exec` and `sandbox run` (docs/run-result.md):
    the program's code, 128+N when killed by signal N, 124 timeout, 125 the sandbox
    failed before the program ran, 126 cannot execute, 127 not found (the last two
    are the program's process's own codes, as a shell gives them). A run that did
    not end well never exits 0."""
    if result.status == "setup_error":
        return EXIT_SETUP
    if result.status == "timeout":
        return EXIT_TIMEOUT
    if getattr(result, "output_error", None) and result.reason == result.output_error:
        return 1   # its output could not be written: as the program's failed write
    if result.signal is not None:
        return 128 + result.signal
    if result.exit_code:
        return result.exit_code
    return 0 if result.status == "ok" else 1


def needs_explaining(result: Any) -> bool:
    """Every end but the program's own (ok, a plain non-zero exit, or SIGPIPE: a reader
    that left, as in `sandbox exec ... | head`, about which a shell says nothing either)
    gets one stderr line."""
    if result.status == "signaled" and result.signal == signal.SIGPIPE:
        return False
    return result.status != "ok" and not (
        result.status == "error" and result.exit_code is not None
        and result.reason == f"exit code {result.exit_code}")


_LIMIT_HINTS = {
    "memory": "raise [limits] memory in the policy",
    "cpu": "raise [limits] cpu in the policy",
    "processes": "raise [limits] processes in the policy",
    "file_size": "raise [limits] file_size in the policy",
}


_LIMIT_FLAG = {"memory": "--memory", "cpu": "--cpu", "processes": "--processes"}


def _hint(result: Any, timeout: str | None = None, given: Any = None) -> str:
    """What to change, for the ends whose reason does not say it already. `timeout`: the
    --timeout given, to say which of it and the policy's wall ended the run (a
    --timeout longer than the wall only shortens it, so raising it cannot help)."""
    status, reason = str(result.status), str(result.reason or "")
    if status == "timeout":
        wall = "raise --wall or [limits] wall in the policy; --timeout only shortens it"
        if timeout is None:
            return wall
        from sandbox.policy.units import parse_duration
        try:
            asked = parse_duration(timeout)
        except ValueError:
            return wall
        if f"limit of {asked:g}s " in reason:
            return "raise --timeout"
        return f"the policy's wall limit, shorter than --timeout {asked:g}s: {wall}"
    if status == "limit_exceeded":
        flag = _LIMIT_FLAG.get(reason)
        if flag and getattr(given, reason, None) is not None:   # the caller set it so
            return f"raise {flag}"
        return _LIMIT_HINTS.get(reason, "")
    if status == "violation" and reason.startswith("seccomp"):
        return "allow it under [syscalls] allow in the policy, if the program needs it"
    if status == "violation" and reason.startswith("killed by SIGSYS"):
        return "see `sandbox policy show` for the syscall profile"
    return ""


def describe_failure(result: Any, timeout: str | None = None, given: Any = None) -> str:
    """The one stderr line of a run that did not end normally: why, and what to change.
    The reason can quote the program (an exec error, an action's exception message):
    rendered printable."""
    from sandbox.printable import printable
    line = f"sandbox: {result.status}: {printable(result.reason)}" if result.reason else \
        f"sandbox: {result.status}"
    hint = _hint(result, timeout, given)
    return f"{line} ({hint})" if hint and "(" not in str(result.reason) else line


def shadowed_program(argv: list[str], result: Any) -> str | None:
    """A note when the program the caller's PATH names first was hidden from the run, so
    the sandbox's PATH search went on to another one of that name (pyenv's shims, ~/bin
    under the hidden HOME: `python3` ran /usr/bin/python3, exit 0, and nothing said
    so). Known from the audit's refusals of the search's own lookups, so only for a
    run that records them; None otherwise."""
    import shutil
    if not argv or "/" in argv[0]:
        return None
    first = shutil.which(argv[0])
    if first is None:
        return None
    refused = {str(r.get("path")) for r in (getattr(result, "denied", None) or [])}
    if first not in refused or any(first in h for h in getattr(result, "hints", None) or ()):
        return None
    from sandbox.printable import printable
    where = os.path.dirname(first)
    return (f"sandbox: note: {printable(first)}, first on your PATH, is not in the sandbox's "
            f"view, so the sandbox ran the next {printable(argv[0])} on PATH, if any "
            f"(--exec {printable(where)} to run it, or name the program by its path)")


def workdir_note(result: Any) -> str | None:
    """Where a copy-on-write run's writes to the work directory went: the program ended
    well and its files are not in the work directory (`make` built nothing, to a person
    at a terminal: everyday probe 3, E4). None when the run changed nothing there."""
    changes = getattr(result, "workdir_changes", None)
    if not changes:
        return None
    from sandbox.printable import printable
    return (f"sandbox: note: the work directory was copy-on-write, the host's is untouched: "
            f"the changes are in {printable(changes)} (deleted names in "
            "workdir.deleted.json beside it; --write . changes the host's in place)")


@contextlib.contextmanager
def stderr_may_be_full() -> Iterator[None]:
    """Around the CLI's own lines after a run: when stderr cannot take them (2>/dev/full,
    whose failure the run itself reports), fd 2 is pointed at /dev/null, so that the
    interpreter's flush at exit does not turn the run's exit code into 120."""
    import sys
    try:
        yield
        sys.stderr.flush()
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)


def print_hints(result: Any) -> None:
    """RunResult.hints, one line each on stderr: where the sandbox is why the run
    failed (sandbox.launcher.hints). They can quote paths the program chose:
    rendered printable."""
    import sys
    from sandbox.printable import printable
    for hint in getattr(result, "hints", None) or ():
        print(f"sandbox: hint: {printable(hint)}", file=sys.stderr)


def default_action(parent: argparse.ArgumentParser, actions: argparse._SubParsersAction,
                   name: str) -> None:
    """`sandbox runs` alone is `sandbox runs list`, as `git stash` is `git stash list`:
    a command that reads state answers its commonest question rather than an argparse
    error. Call once every action is registered (and its `func` set)."""
    actions.required = False
    chosen = actions.choices[name]

    def run(args: argparse.Namespace) -> int:
        for key, value in vars(chosen.parse_args([])).items():
            if not hasattr(args, key):
                setattr(args, key, value)
        func = chosen.get_default("func")
        return int(func(args) or 0)
    parent.set_defaults(func=run)


def policy_path_hint(value: str | None) -> str | None:
    if value and os.sep in value and not os.path.exists(value):
        raise InputError(f"{value}: policy file not found")
    return value


def signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)
