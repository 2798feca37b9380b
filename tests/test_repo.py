"""Repository-level guarantees: README commands run in CI, import hygiene, docstrings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import ntkmonitor

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Get started.*?```bash\n(.*?)```", text, re.S)
    assert block, "README must have a 'Get started' bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_two_commands_and_ci_runs_both():
    commands = _readme_commands()
    assert len(commands) == 2
    ci_lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    for command in commands:
        assert command.strip() in ci_lines, f"README command not run verbatim by .ci/run: {command}"


def test_readme_audit_command_runs_in_ci():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Audit saved checkpoints.*?```bash\n(.*?)```", text, re.S)
    assert block, "README must show the audit command"
    ci_lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    assert block.group(1).strip() in ci_lines


def test_import_does_not_pull_lightning_or_tensorboard():
    code = (
        "import sys, ntkmonitor; "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'tensorboard', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_has_a_docstring_with_an_example():
    for name in ntkmonitor.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(ntkmonitor, name)
        doc = obj.__doc__ or ""
        assert "Example" in doc, f"ntkmonitor.{name} needs a docstring with an example"


def test_no_private_name_is_used_across_modules():
    """House rule: what one module shares with another is public (``_checks`` and friends are internal modules
    whose functions are public names; ``drift._subspace_overlap`` from another module is not allowed)."""
    import ast

    package = ROOT / "ntkmonitor"
    offences = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules: set[str] = set()
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.level > 0):
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or "").split(".")) if node.module else base
            for alias in node.names:
                is_module = (target / f"{alias.name}.py").exists() or (target / alias.name).is_dir()
                if is_module:
                    modules.add(alias.asname or alias.name)
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert offences == []
