"""One HTML page that opens offline: a header (what was run, on what, when, with which versions), the main result
in one sentence, then sections of figures (SVG or PNG embedded as ``data:`` URIs), tables and text. No script,
no stylesheet or image fetched from anywhere: the file is the whole report."""

from __future__ import annotations

import base64
import datetime
import html
import io
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aam import __version__
from aam.fileio import atomic_write

CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 16px 28px 48px; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 4px; } h2 { font-size: 1.2em; margin-top: 32px;
     border-bottom: 1px solid #ccc; padding-bottom: 3px; }
.headline { font-size: 1.12em; background: #f3f6fa; border-left: 4px solid #0072B2; padding: 10px 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.86em; }
th, td { border: 1px solid #d4d4d4; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts td:first-child { font-weight: bold; white-space: nowrap; background: #fafafa; }
code, pre, td.seq { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
td.seq { word-break: break-all; max-width: 420px; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; white-space: pre-wrap; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.88em; color: #444; max-width: 900px; }
.note { color: #555; font-size: 0.9em; } .wide { overflow-x: auto; }
p.caption { font-weight: bold; font-size: 0.88em; margin: 10px 0 2px; }
"""


def invocation(command: str, options: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None) -> str:
    """The command line as typed when this process is the ``aam`` program, else the command with its options
    (those that differ from ``defaults``)."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    typed = program == "aam" or (program == "__main__.py" and "aam" in sys.argv[0])
    if typed and len(sys.argv) > 1 and sys.argv[1] == command:  # not a step run inside another (aam demo)
        return shlex.join(["aam", *sys.argv[1:]])
    defaults = defaults or {}
    shown = {k: v for k, v in (options or {}).items()
             if v not in (None, False, "", (), []) and not (k in defaults and _same(defaults[k], v))}
    parts = ["aam", command]
    for key, value in shown.items():
        parts.append("--" + key.replace("_", "-"))
        if value is not True:
            parts.append(",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    return shlex.join(parts) + "   (called from Python)"


def versions() -> str:
    """The versions that shaped the numbers: aam, Python and the numeric libraries."""
    import numpy
    import sklearn
    import torch

    return (f"aam {__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {numpy.__version__}, pandas {pd.__version__}, scikit-learn {sklearn.__version__}")


@dataclass
class ReportPage:
    """A report being assembled; ``write`` renders it into one file atomically."""

    title: str
    headline: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    _body: list[str] = field(default_factory=list)
    figures: int = 0

    def section(self, title: str, intro: str = "") -> None:
        self._body.append(f"<h2>{html.escape(title)}</h2>")
        if intro:
            self.text(intro)

    def text(self, paragraph: str, note: bool = False) -> None:
        css = ' class="note"' if note else ""
        self._body.append(f"<p{css}>{html.escape(paragraph)}</p>")

    def preformatted(self, text: str) -> None:
        self._body.append(f"<pre>{html.escape(text)}</pre>")

    def figure(self, figure, caption: str, alt: str, raster: bool = False) -> None:
        """Embed a matplotlib figure (SVG, or PNG when ``raster``) with its caption, then close it."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png" if raster else "svg", dpi=150, metadata=_no_date(raster))
        finally:
            plt.close(figure)
        kind = "png" if raster else "svg+xml"
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.figures += 1
        self._body.append(f'<figure id="figure-{self.figures}"><img src="data:image/{kind};base64,{data}" '
                          f'alt="{html.escape(alt)}"><figcaption>Figure {self.figures}. {html.escape(caption)}'
                          "</figcaption></figure>")

    def table(self, frame: pd.DataFrame, caption: str = "", digits: int = 4, monospace: Sequence[str] = (),
              max_rows: int | None = None) -> None:
        """A table of ``frame`` (numbers to ``digits`` significant digits; ``monospace`` columns wrap, e.g.
        sequences), cut to ``max_rows`` with a note of how many rows the file holds."""
        shown = frame if max_rows is None else frame.head(max_rows)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
        rows = []
        for _, row in shown.iterrows():
            cells = []
            for column, value in row.items():
                text, css = _cell(value, digits)
                css = "seq" if column in monospace else css
                cells.append(f'<td class="{css}">{html.escape(text)}</td>' if css else f"<td>{html.escape(text)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        caption_html = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        self._body.append(f'<div class="wide">{caption_html}<table><thead><tr>{head}</tr></thead>'
                          f"<tbody>{''.join(rows)}</tbody></table></div>")
        if max_rows is not None and len(frame) > max_rows:
            self.text(f"The first {max_rows} of {len(frame)} rows; the file holds them all.", note=True)

    def details(self, summary: str, text: str) -> None:
        """A folded block (opens on click without any script) holding preformatted text."""
        self._body.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre>"
                          "</details>")

    def render(self) -> str:
        facts = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in self.facts)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1><table class=\"facts\">{facts}</table>"
                f"<p class=\"headline\">{html.escape(self.headline)}</p>{''.join(self._body)}</body></html>\n")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        text = self.render()

        def write(tmp: str) -> None:
            Path(tmp).write_text(text, encoding="utf-8")

        atomic_write(path, write)
        return path


def _same(default: Any, value: Any) -> bool:
    if isinstance(default, tuple) and isinstance(value, list):
        return list(default) == value
    return default == value


def standard_facts(command: str, options: dict[str, Any] | None,
                   defaults: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """The rows every report starts with: the command, the date and the versions."""
    return [("command", invocation(command, options, defaults)),
            ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
            ("versions", versions())]


def _no_date(raster: bool) -> dict[str, Any]:
    return {"Software": None} if raster else {"Date": None}


def _cell(value: Any, digits: int) -> tuple[str, str]:
    if isinstance(value, bool) or value is None:
        return ("" if value is None else str(value)), ""
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):  # bools returned above
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value), ""
        if number != number:  # NaN
            return "", "num"
        if float(number).is_integer() and abs(number) < 1e15:
            return f"{int(number)}", "num"
        return f"{number:.{digits}g}", "num"
    return str(value), ""

