"""MkDocs hook: render the docs' TeX formulas to inline SVG at build time, so the site needs no network.

``pymdownx.arithmatex`` (generic mode) wraps each formula in ``<span class="arithmatex">\\(...\\)</span>`` (inline)
or ``<div class="arithmatex">\\[...\\]</div>`` (display). This hook replaces each with an SVG drawn by matplotlib's
mathtext (no LaTeX installation and no JavaScript). Size commands mathtext does not know (``\\Big``, ``\\big``) are
dropped; a formula mathtext cannot parse stays as its TeX source in a ``<code>`` element and is reported.
"""

from __future__ import annotations

import html
import io
import logging
import re
from functools import cache

log = logging.getLogger("mkdocs.hooks.math")

_FORMULA = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?:\\\(|\\\[)(?P<tex>.*?)(?:\\\)|\\\])\s*</(?P=tag)>', re.S
)
_SIZES = re.compile(r"\\(?:Big|big|Bigg|bigg)(?:l|r)?(?![a-zA-Z])")
_REWRITES = {
    r"\ge ": r"\geq ",
    r"\le ": r"\leq ",
    r"\|": r"\Vert ",
    r"\;": r"\ ",
    r"\texttt": r"\mathtt",
    r"\top": "T",
    r"\dots": r"\ldots",
    r"\tfrac": r"\frac",
    r"\dfrac": r"\frac",
    r"\lvert": "|",
    r"\rvert": "|",
    r"\lVert": r"\Vert",
    r"\rVert": r"\Vert",
}


def _clean(tex: str) -> str:
    tex = html.unescape(tex).replace("\n", " ")
    tex = _SIZES.sub("", tex)
    for old, new in _REWRITES.items():
        tex = tex.replace(old, new)
    tex = re.sub(r"\\(operatorname|text|textrm|mathrm)\{([^}]*)\}", r"\\mathrm{\2}", tex)
    tex = re.sub(r"\\(ge|le)(?![a-zA-Z])", r"\\\1q", tex)  # \ge, \le at the end or before a symbol
    tex = re.sub(r"\\frac\s*(\d)\s*(\\[a-zA-Z]+|\w)", r"\\frac{\1}{\2}", tex)  # \frac1k, \frac1\kappa
    tex = re.sub(r"\\sqrt\s+(\\[a-zA-Z]+|\w)", r"\\sqrt{\1}", tex)  # \sqrt M
    return tex.strip()


@cache
def render(tex: str, display: bool) -> str | None:
    """The formula as an inline ``<svg>`` element, or ``None`` when mathtext cannot parse it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    buffer = io.BytesIO()
    size = 14 if display else 12  # points: about the body text's size
    try:
        mathtext.math_to_image(f"${tex}$", buffer, format="svg", prop=FontProperties(size=size), dpi=72)
    except Exception:  # noqa: BLE001 - any parse error: keep the source
        return None
    svg = buffer.getvalue().decode("utf-8")
    svg = svg[svg.index("<svg") :]
    css = "display:block;margin:0.8em auto" if display else "vertical-align:middle"
    return svg.replace("<svg", f'<svg role="img" aria-label="{html.escape(tex, quote=True)}" style="{css}"', 1)


def on_page_content(html_text: str, page, config, files) -> str:  # noqa: ANN001 - mkdocs' hook signature
    """Replace every arithmatex formula on the page by its SVG."""

    def replace(match: re.Match) -> str:
        display = match.group("tag") == "div"
        tex = _clean(match.group("tex"))
        svg = render(tex, display)
        if svg is None:
            log.warning("math: could not render %r on %s; kept as TeX", tex[:80], page.file.src_path)
            return f'<code class="tex">{html.escape(tex)}</code>'
        return f'<div class="math">{svg}</div>' if display else f'<span class="math">{svg}</span>'

    return _FORMULA.sub(replace, html_text)
