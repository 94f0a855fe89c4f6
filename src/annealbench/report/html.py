"""One self-contained HTML page: inline CSS, figures as base64 PNG data URIs, no scripts and
no external resources, so it opens offline from a file or an e-mail attachment."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass, field

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table.results { border-collapse: collapse; margin: .6em 0 1em; font-size: .85em; }
table.results th, table.results td { padding: .2em .55em; text-align: right; white-space: nowrap; }
table.results thead th { border-bottom: 1.5px solid #444; }
table.results tbody tr:nth-child(even) { background: #f5f5f5; }
table.results tbody th { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: .5em 1em; }
.legend, .small { font-size: .85em; color: #555; }
dl dt { font-weight: 600; } dl dd { margin: 0 0 .5em 1.5em; }
"""


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI for an inline image."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class Page:
    """An HTML page built section by section; text arguments are escaped, ``raw`` is not."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{html.escape(anchor)}"' if anchor else ""
        self.parts.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def definitions(self, items: Iterable[tuple[str, str]]) -> None:
        body = "".join(
            f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in items
        )
        self.parts.append(f"<dl>{body}</dl>")

    def figure(self, png: bytes, alt: str, caption: str) -> None:
        self.parts.append(
            f'<figure><img src="{png_data_uri(png)}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n<h1>{html.escape(self.title)}</h1>\n{body}\n</body>\n</html>\n"
        )
