"""Builds the compiled parts of the sandbox: `sandbox/_native/sandbox-init`, the thin
`sandbox exec` client `sandbox/_native/sandbox` (client.c), the audit loop's fast path
`sandbox/_native/libnotify_fast.so` (notify_fast.c) and the compiled stub
`sandbox/_native/libstub_fork.so` (stub_fork.c).

Everything else is declared in pyproject.toml. The init is an executable, not
an extension module, so it gets its own build step (`build_native`) in the
`build` sequence: in a wheel it lands in build_lib next to the package; in an
editable install (setuptools sets `editable_mode`) it is built in place, in
the source tree, where the editable finder loads the package from. It is
linked statically: it must run in a sandbox whose view holds no library.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.dist import Distribution

SOURCE = os.path.join("sandbox", "_native", "init.c")
TARGET = os.path.join("sandbox", "_native", "sandbox-init")


def _toolchain():
    """sandbox/_native/toolchain.py, the init's compiler and flags, loaded as a file: the
    package itself is not importable before it is installed. The launcher's on-demand
    build (sandbox/_native/__init__.py) uses the same module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_sandbox_toolchain", os.path.join("sandbox", "_native", "toolchain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
# The compiled thin client of `sandbox exec` (sandbox/_native/client.c): static with musl
# (toolchain.client_build), told which interpreter runs the Python CLI.
CLIENT_SOURCE = os.path.join("sandbox", "_native", "client.c")
CLIENT_TARGET = os.path.join("sandbox", "_native", "sandbox")
# The audit loop's compiled fast path (sandbox/_native/notify_fast.c): a plain shared object
# loaded with ctypes by the monitor (sandbox/monitor/notify_fast.py), no Python headers.
FAST_SOURCE = os.path.join("sandbox", "_native", "notify_fast.c")
FAST_TARGET = os.path.join("sandbox", "_native", "libnotify_fast.so")
FAST_CFLAGS = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-s"]
# The stub's first half, compiled (sandbox/_native/stub_fork.c): loaded with ctypes by the
# zygote (sandbox/sandboxee/stub_fork.py), built like the fast path.
STUB_SOURCE = os.path.join("sandbox", "_native", "stub_fork.c")
STUB_TARGET = os.path.join("sandbox", "_native", "libstub_fork.so")


class build_native(Command):
    description = "compile sandbox-init (static) with the system C compiler"
    user_options: list = []

    def initialize_options(self) -> None:
        self.build_lib = None
        self.editable_mode = False

    def finalize_options(self) -> None:
        self.set_undefined_options("build", ("build_lib", "build_lib"))

    def run(self) -> None:
        import sys
        chain = _toolchain()
        self._compile(SOURCE, TARGET, list(chain.CFLAGS), cc=chain.init_cc(self._cc()))
        # the interpreter running this build is the one the package is installed for
        client_cc, client_flags = chain.client_build(self._cc())
        self._compile(CLIENT_SOURCE, CLIENT_TARGET,
                      [*client_flags, f'-DSANDBOX_PYTHON="{sys.executable}"'], cc=client_cc)
        self._compile(FAST_SOURCE, FAST_TARGET, FAST_CFLAGS)
        self._compile(STUB_SOURCE, STUB_TARGET, FAST_CFLAGS)
        if self.editable_mode:
            self._bytecode()

    def _bytecode(self) -> None:
        """Byte-compile the package in place, as pip does for a wheel it installs.

        A sandbox never writes bytecode (its view of the runtime is read-only and its
        Python action runs with `sys.dont_write_bytecode`), and a module imported only
        inside sandboxes -- the runtime's own actions (`sandbox.bench.actions`, the
        demos) -- would otherwise be compiled from source by every run's PID 2: ~0.75
        ms of CPU and ~180 page faults for bench/actions.py in a fork of the template,
        and one more audited open (docs/benchmarks.md, "From ready to exited"). A
        source edited later has a stale .pyc, which Python ignores: never wrong."""
        import compileall
        compileall.compile_dir("sandbox", quiet=2)

    @staticmethod
    def _cc() -> str:
        return os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"

    def _compile(self, source: str, target: str, flags: list[str], cc: str = "") -> None:
        out = target if self.editable_mode else os.path.join(self.build_lib, target)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cmd = [*(cc or self._cc()).split()[:1], *flags, "-o", out + ".tmp", source]
        if shutil.which(cmd[0]) is None:
            raise SystemExit(f"build_native: no C compiler ({cmd[0]}): install gcc and libc6-dev")
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)
        os.chmod(out + ".tmp", 0o755)
        os.replace(out + ".tmp", out)

    def get_outputs(self) -> list[str]:
        return [t if self.editable_mode else os.path.join(self.build_lib or "", t)
                for t in (TARGET, CLIENT_TARGET, FAST_TARGET, STUB_TARGET)]

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return [SOURCE, CLIENT_SOURCE, FAST_SOURCE, STUB_SOURCE]


class build_with_native(build):
    sub_commands = [("build_native", None), *build.sub_commands]


class BinaryDistribution(Distribution):
    """The wheel holds a compiled executable: tag it for this platform."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build": build_with_native, "build_native": build_native},
      distclass=BinaryDistribution)
