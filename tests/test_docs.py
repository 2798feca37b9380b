"""The documentation site: the nav points at existing pages, the API reference covers the public API, and
``mkdocs build --strict`` passes (when mkdocs is installed: ``pip install -e ".[docs]"``)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ntkmonitor

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DIRECTIVE = re.compile(r"^:::\s+(ntkmonitor(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$", re.MULTILINE)


def _nav_pages() -> list[str]:
    """Every page named in mkdocs.yml's ``nav`` (read as text: the file uses no YAML that needs a parser)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"^\s+-\s+(?:[^:\n]+:\s+)?([\w./-]+\.md)\s*$", nav, re.MULTILINE)


def _api_pages() -> dict[Path, str]:
    return {path: path.read_text() for path in sorted((DOCS / "api").glob("*.md"))}


def test_every_nav_page_exists():
    pages = _nav_pages()
    assert "index.md" in pages and len(pages) >= 10, pages
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml nav names pages that do not exist: {missing}"


def test_every_api_page_is_in_the_nav():
    pages = set(_nav_pages())
    for path in _api_pages():
        assert f"api/{path.name}" in pages, f"docs/api/{path.name} is not in mkdocs.yml's nav"


def test_every_public_name_is_in_the_api_reference():
    pages = _api_pages()
    directives = {target for text in pages.values() for target in DIRECTIVE.findall(text)}
    documented = set(directives)
    for target in directives:  # a module directive documents the names in the module's __all__
        try:
            module = importlib.import_module(target)
        except ImportError:  # a directive for an object inside a module, not a module
            continue
        documented.update(getattr(module, "__all__", ()))
    text = "\n".join(pages.values())
    for name in ntkmonitor.__all__:
        if name.startswith("__"):
            continue
        assert name in documented or f"ntkmonitor.{name}" in documented, f"no ::: directive documents {name}"
        assert re.search(rf"\b{re.escape(name)}\b", text), f"docs/api/*.md never names {name}"


def _docs_tools_installed() -> bool:
    try:
        return all(importlib.util.find_spec(name) for name in ("mkdocs", "material", "mkdocstrings_handlers.python"))
    except ImportError:
        return False


@pytest.mark.skipif(not _docs_tools_installed(), reason='the docs tools are not installed: pip install -e ".[docs]"')
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "callback" / "index.html").read_text().count("ntkmonitor.callback.NTKMonitor")


def test_the_built_site_reads_offline(tmp_path):
    """Regression (issue 16, item 8): the equations needed a MathJax CDN and the fonts Google's; offline the
    formulas showed as raw TeX. Now every formula is an SVG drawn at build time and nothing is fetched."""
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=root,
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    pages = list((tmp_path / "site").rglob("*.html"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    assert not re.search(r"https?://(cdn\.jsdelivr|fonts\.googleapis|unpkg|cdnjs)", text)
    theory = (tmp_path / "site" / "theory" / "index.html").read_text(encoding="utf-8")
    assert theory.count('class="math"') > 100 and 'class="arithmatex"' not in theory  # TeX only in aria-labels
