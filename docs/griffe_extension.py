"""Griffe extension used by the API reference (mkdocs.yml): read ntkmonitor's docstrings as Markdown.

The package's docstrings are Google style, written to read well in ``help()`` and to run as doctests. Three
reStructuredText habits in them do not mean anything to mkdocstrings, so they are rewritten before parsing;
the source files are not touched:

- an ``Example:`` section title becomes ``Examples:``, which griffe parses into highlighted code blocks (an
  unknown title would be an admonition whose ``>>>`` lines are read as Markdown);
- cross-reference roles such as ``:func:`~ntkmonitor.empirical_ntk``` or ``:meth:`text <target>``` become code
  spans with the text a reader would see (``empirical_ntk``, ``text``);
- ``.. math::`` blocks become ``$$ ... $$`` blocks, which ``pymdownx.arithmatex`` marks and ``docs/math_hook.py``
  renders to SVG at build time.

It also documents ``ntkmonitor.callback.NTKMonitor``, which the module builds at import time with ``type()``
(so it works on either Lightning package): static analysis sees an attribute, so the extension replaces it
with a class whose docstring is the module's ``_DOC`` and whose members come from ``NTKMonitorLogic``.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Any

from griffe import Class, Docstring, ExprName, Extension, Module, Object

_EXAMPLE_TITLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):`([^`]+)`")
_MATH = re.compile(r"^(\s*)\.\. math::\s*$")


def _role_text(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    explicit = re.fullmatch(r"(.+?)\s*<[^>]+>", target)
    if explicit:
        return f"`{explicit.group(1)}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def _math_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group(1)
        i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        formula = textwrap.dedent("\n".join(body)).strip("\n")
        out.append(f"{indent}$$")
        out.extend(f"{indent}{line}" if line.strip() else "" for line in formula.splitlines())
        out.append(f"{indent}$$")
        out.append("")
    return "\n".join(out)


def to_markdown(docstring: str) -> str:
    """Rewrite the reStructuredText habits of a docstring as Markdown (see the module docstring)."""
    text = _EXAMPLE_TITLE.sub(r"\1Examples:", docstring)
    text = _ROLE.sub(_role_text, text)
    return _math_blocks(text)


def _document_callback_class(module: Module) -> None:
    members = module.members
    if not {"NTKMonitor", "NTKMonitorLogic", "_DOC"} <= members.keys() or not members["NTKMonitor"].is_attribute:
        return
    attribute = members["NTKMonitor"]
    text = inspect.cleandoc(ast.literal_eval(str(members["_DOC"].value)))
    cls = Class(
        "NTKMonitor",
        lineno=attribute.lineno,
        endlineno=attribute.endlineno,
        bases=[ExprName("NTKMonitorLogic", parent=module)],
    )
    style = module.docstring  # the module's docstring carries the configured parser (google) and its options
    cls.docstring = Docstring(
        to_markdown(text),
        lineno=attribute.lineno,
        parent=cls,
        parser=style.parser if style else None,
        parser_options=style.parser_options if style else None,
    )
    module.set_member("NTKMonitor", cls)


class MarkdownDocstrings(Extension):
    """Rewrite every docstring of the loaded package before mkdocstrings parses it."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place, once the object tree is complete."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Document the callback class that ``ntkmonitor.callback`` builds at import time."""
        if pkg.name == "ntkmonitor" and "callback" in pkg.members:
            _document_callback_class(pkg.members["callback"])
