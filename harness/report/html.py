"""A small, self-contained HTML document: sections, tables and figures embedded as PNG.

Everything a page needs is inside the one file — styles inline, figures as ``data:`` URIs,
no scripts, fonts or links to fetch — so it opens from disk with no network and can be
mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1180px;
       color: #1d232b; padding: 0 1.2em; }
h1 { font-size: 1.7em; margin-bottom: .1em; } h2 { border-bottom: 2px solid #d9dee5; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.4em; } .lead { color: #5a6470; margin-top: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ec; }
figcaption { color: #5a6470; font-size: .9em; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d9dee5; padding: .25em .6em; text-align: right; }
th { background: #f2f4f7; } td:first-child, th:first-child { text-align: left; }
dl.prov { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; font-size: .88em; }
dl.prov dt { color: #5a6470; } dl.prov dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
dl.prov dd pre { margin: 0; white-space: pre; overflow-x: auto; word-break: normal; background: #f7f8fa; padding: .4em; }
footer { margin-top: 3em; border-top: 2px solid #d9dee5; padding-top: 1em; }
nav ul { columns: 2; } .note { color: #5a6470; font-size: .92em; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib Figure (drawn on an Agg canvas, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


@dataclass
class Section:
    """One titled part of the report; ``parts`` are HTML fragments in order."""

    title: str
    anchor: str
    lead: str = ""
    parts: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h3>{esc(text)}</h3>")

    def paragraph(self, text: str, cls: str = "") -> None:
        self.parts.append(f'<p class="{esc(cls)}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>")

    def figure(self, png: bytes, caption: str, alt: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> None:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
        cap = f"<caption>{esc(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def render_document(title: str, subtitle: str, sections: Sequence[Section], footer: dict[str, Any]) -> str:
    """The whole page. ``footer``: provenance of the report itself (shown after every
    section's own provenance)."""
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    body = []
    for s in sections:
        lead = f'<p class="lead">{esc(s.lead)}</p>' if s.lead else ""
        body.append(f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{lead}{"".join(s.parts)}</section>')
    prov = []
    for s in sections:
        if s.provenance:
            prov.append(f"<h3>{esc(s.title)}</h3>{_dl(s.provenance)}")
    prov.append(f"<h3>this report</h3>{_dl(footer)}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{_STYLE}</style></head><body><header><h1>{esc(title)}</h1><p class=\"lead\">{esc(subtitle)}</p>"
        f"<nav><ul>{toc}</ul></nav></header>{''.join(body)}"
        f"<footer><h2>Provenance</h2>{''.join(prov)}</footer></body></html>\n"
    )


def _dl(items: dict[str, Any]) -> str:
    rows = []
    for k, v in items.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, (list, tuple)):
            v = " ".join(str(x) for x in v)
        if isinstance(v, str) and "\n" in v:  # a TOML source, a grid: keep its lines
            rows.append(f"<dt>{esc(k)}</dt><dd><pre>{esc(v.strip())}</pre></dd>")
            continue
        rows.append(f"<dt>{esc(k)}</dt><dd>{esc(shown_path(v) if isinstance(v, str) else v)}</dd>")
    return f'<dl class="prov">{"".join(rows)}</dl>'


def shown_path(text: str) -> str:
    """An absolute file path as a reader of the report can use it: relative to the directory
    the report was made in when it lies below it, else its file name (a temporary directory
    of the machine that ran it means nothing to the reader). Other text is returned as is."""
    import os

    if not (os.path.isabs(text) and "\n" not in text and os.path.splitext(text)[1]):
        return text
    try:
        rel = os.path.relpath(text)
    except ValueError:
        return os.path.basename(text)
    return rel if not rel.startswith("..") else os.path.basename(text)
