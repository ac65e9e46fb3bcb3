"""Every code block in README.md and docs/ is executed or checked, so an example
cannot silently rot.

THE CONVENTION (for everyone adding docs):

* A fenced block's language decides what happens to it:
    - ```sh / ```bash / ```shell  run with `bash -e -o pipefail` (every command
      must succeed; write an expected failure as `cmd || echo "exit $?"`);
    - ```python / ```py           run as a script;
    - ```toml                      parsed as TOML (a policy example must parse);
    - ```json                      parsed as JSON (a workflow with "stages" is
                                   also validated by Workflow.from_dict);
    - ```text / ```console         an output sample or a diagram: exempt,
                                   visibly, by its language;
    - no language                  an error: say which of the above it is.
* A shell or Python block that cannot run here (it installs system packages,
  runs this very suite, or is a sketch of internal code with undefined names)
  carries a visible marker on the line right above its fence:
      <!-- docs-test: skip <why> -->
  and is reported as skipped with that reason (pytest -ra lists them).
* `<!-- docs-test: in-sandbox -->` above a Python block runs it as the program
  of `sandbox exec` (e.g. a raw IPC child that needs SANDBOX_IPC_FD).

Blocks run in order, per file, in a scratch copy of README.md, docs/ and
policies/ (so relative paths such as docs/examples/hello.json work and
nothing is written into the checkout), with $SANDBOX_HOME in that copy and
the venv's bin first on PATH (`sandbox`, `python3`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*docs-test:\s*([\w-]+)\s*(.*?)\s*-->")
SHELL, PYTHON = {"sh", "bash", "shell"}, {"python", "py"}
EXEMPT = {"text", "console"}


@dataclass(frozen=True)
class Block:
    file: str          # relative to the repository
    line: int          # of the opening fence
    lang: str
    body: str
    marker: tuple[str, str] | None    # (directive, reason)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mk = MARKER.search(before)
            out.append(Block(str(path.relative_to(ROOT)), line, m.group(1).lower(), m.group(2),
                             (mk.group(1), mk.group(2)) if mk else None))
    return out


ALL = blocks()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("docs")
    shutil.copy(ROOT / "README.md", base / "README.md")
    shutil.copytree(ROOT / "docs", base / "docs")
    shutil.copytree(ROOT / "policies", base / "policies")
    (base / "state").mkdir()
    for p in [base, *base.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return base


def _env(scratch: Path) -> dict[str, str]:
    bindir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "SANDBOX_HOME": str(scratch / "state"), "PYTHONDONTWRITEBYTECODE": "1"}


def test_every_block_has_a_known_language_or_marker():
    bad = [b.id for b in ALL if b.lang not in SHELL | PYTHON | EXEMPT | {"toml", "json"}]
    assert bad == [], f"tag these blocks (sh, python, toml, json, text): {bad}"
    unknown = [b.id for b in ALL if b.marker and b.marker[0] not in ("skip", "in-sandbox")]
    assert unknown == []


def test_the_exempt_blocks_are_listed(capsys):
    """What is not run, and why, in one place (also shown by pytest -ra as skips)."""
    exempt = [f"{b.id} [{b.lang}]" for b in ALL if b.lang in EXEMPT]
    skipped = [f"{b.id} [{b.lang}] {b.marker[1]}" for b in ALL
               if b.marker and b.marker[0] == "skip"]
    with capsys.disabled():
        print("\ndocs blocks not run: output samples/diagrams:", *exempt, sep="\n  ")
        print("docs blocks not run: marked skip:", *skipped, sep="\n  ")
    runnable = [b for b in ALL if b.lang in SHELL | PYTHON and not b.marker]
    assert len(runnable) >= 5, "the docs lost their runnable examples"


@pytest.mark.isolation
@pytest.mark.parametrize("block", [b for b in ALL if b.lang in SHELL | PYTHON],
                         ids=lambda b: b.id)
def test_runnable_block(block: Block, scratch: Path):
    if block.marker and block.marker[0] == "skip":
        pytest.skip(f"{block.id}: marked docs-test: skip {block.marker[1]}")
    script = scratch / f"block-{block.line}.{'sh' if block.lang in SHELL else 'py'}"
    script.write_text(block.body)
    script.chmod(0o644)
    if block.lang in SHELL:
        cmd = ["bash", "-e", "-o", "pipefail", str(script)]
    elif block.marker and block.marker[0] == "in-sandbox":
        cmd = [sys.executable, "-m", "sandbox", "exec", "--", sys.executable, "-I", str(script)]
    else:
        cmd = [sys.executable, str(script)]
    p = subprocess.run(cmd, cwd=scratch, env=_env(scratch), capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{block.id} failed ({p.returncode}):\n{p.stdout[-3000:]}\n" \
                              f"{p.stderr[-3000:]}"


@pytest.mark.parametrize("block", [b for b in ALL if b.lang in ("toml", "json")],
                         ids=lambda b: b.id)
def test_data_block_parses(block: Block):
    if block.lang == "toml":
        tomllib.loads(block.body)
        return
    data = json.loads(block.body)
    if isinstance(data, dict) and "stages" in data:
        from sandbox.workflow import Workflow
        Workflow.from_dict(data, source=block.id)


# -- contradictions between the docs and the code (issue 12 item 10) ------------

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_links_and_paths_stay_in_the_repository():
    """A doc may not point outside the repository (a reader of a clone has no
    ../shared/...), and every relative link must exist."""
    bad = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            full = (path.parent / target).resolve()
            if ROOT not in full.parents and full != ROOT or not full.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target}")
        for m in re.finditer(r"`(\.\./[^`]+)`", text):
            if ROOT not in (path.parent / m.group(1)).resolve().parents:
                bad.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert bad == []


def test_runtime_dependencies_are_used_at_runtime():
    """Every runtime dependency is imported by the package (pyroute2 was
    declared and imported nowhere; pyseccomp was documented as compiling the
    filters but only a test used it)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    modules = {"python-prctl": "prctl", "psutil": "psutil"}
    source = "\n".join(p.read_text() for p in (ROOT / "sandbox").rglob("*.py"))
    for dep in meta["project"]["dependencies"]:
        name = re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0]
        module = modules.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), \
            f"{name} is a runtime dependency but the package never imports {module}"
    deps = (ROOT / "docs" / "dependencies.md").read_text()
    for name in ("pyroute2",):
        assert name not in meta["project"]["dependencies"] and f"`{name}` | runtime" not in deps


def test_threat_model_states_the_32_bit_tiocsti_mask():
    text = (ROOT / "docs" / "threat-model.md").read_text()
    assert "full 64-bit argument" not in text and "low 32 bits" in text
    src = (ROOT / "sandbox" / "isolation" / "seccomp_bpf.py").read_text() + \
        (ROOT / "sandbox" / "isolation" / "seccomp.py").read_text()
    assert "0xFFFFFFFF" in src.upper() or "32" in src
