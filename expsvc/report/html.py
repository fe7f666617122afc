"""The report as one self-contained HTML page: the template, its CSS and script, uPlot and the data, inline.

uPlot (MIT, about 50 kB minified, draws on a canvas so 1,000-point series stay fast) is vendored in
``static/``; its ``/*! URL (version) */`` header comment is replaced by the name, version and license text,
so the page holds no URL at all and loads nothing from the network.  Stored strings reach the page only as
JSON inside ``<script type="application/json">`` (``<``, ``>``, ``&`` and the JavaScript line separators
escaped, so no ``</script>`` or ``<!--`` can end or alter it) or escaped by :func:`html.escape`.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from expsvc.files import finite_or_none

UPLOT_VERSION = "1.6.32"
_HEADER = re.compile(r"\A/\*!.*?\*/\s*", re.S)
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@cache
def _asset(folder: str, name: str) -> str:
    return (resources.files("expsvc.report") / folder / name).read_text(encoding="utf-8")


def _uplot_js() -> str:
    license_text = _asset("static", "uPlot.LICENSE").replace("*/", "* /")
    return f"/*! uPlot {UPLOT_VERSION}\n{license_text}\n*/\n" + _HEADER.sub("", _asset("static", "uPlot.iife.min.js"))


def script_json(value: Any) -> str:
    """``value`` as JSON safe inside a ``<script>`` element (NaN/±inf as null)."""
    text = json.dumps(finite_or_none(value), separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def render(data: dict[str, Any], *, nav: str = "") -> str:
    """The page for ``data`` (:func:`expsvc.report.data.build`); ``nav`` is trusted HTML (the UI's links)."""
    import expsvc

    title = f"expsvc report: {data['experiment']}"
    fields = {
        "VERSION": html.escape(expsvc.__version__), "UPLOT_VERSION": UPLOT_VERSION,
        "TITLE": html.escape(title), "HEADING": html.escape(title), "NAV": nav,
        "UPLOT_CSS": _asset("static", "uPlot.min.css"), "CSS": _asset("templates", "report.css"),
        "UPLOT_JS": _uplot_js(), "JS": _asset("templates", "report.js"), "DATA": script_json(data),
    }
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: fields[m.group(1)], _asset("templates", "page.html"))
