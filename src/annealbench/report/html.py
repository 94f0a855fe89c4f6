"""One self-contained HTML page: inline CSS, figures as base64 PNG data URIs, one small inline
script (sortable tables, enlargeable figures) and no external resource or network URL, so it
opens offline from a file or an e-mail attachment."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1em auto;
       max-width: 1400px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; }
h1 { margin: .2em 0 .3em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
h2#provenance, h2#best { margin-top: .8em; font-size: 1.25em; }
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
dl.facts { display: grid; grid-template-columns: max-content 1fr max-content 1fr;
           gap: .05em 1em; font-size: .9em; margin: .5em 0; }
dl.facts dt, dl.facts dd { margin: 0; }
table.verdicts td:nth-last-child(-n+2) { white-space: normal; min-width: 14em; text-align: left; }
.spread { font-size: .8em; color: #666; }
pre.source { background: #f6f8fa; border: 1px solid #ddd; padding: .6em 1em; overflow-x: auto;
             font-size: .85em; max-height: 30em; }
.caution { color: #a33; font-size: .85em; }
.banner { background: #fdecea; border-left: 4px solid #c0392b; padding: .5em 1em; }
.headline { background: #eef6ee; border-left: 4px solid #2e7d32; padding: .5em 1em; }
nav.toc { font-size: .9em; } nav.toc ol { display: inline; padding: 0; margin: 0 0 0 .5em; }
nav.toc li { display: inline; margin-right: 1.2em; }
table.sortable thead th { cursor: pointer; }
table.sortable thead th[aria-sort=ascending]::after { content: " ▲"; }
table.sortable thead th[aria-sort=descending]::after { content: " ▼"; }
figure img { cursor: zoom-in; }
figure img.zoomed { position: fixed; inset: 0; margin: auto; max-width: 98vw; max-height: 98vh;
                    z-index: 10; background: #fff; box-shadow: 0 0 0 100vmax rgba(0,0,0,.6);
                    cursor: zoom-out; }
"""

# Click a header of a table.sortable to sort its rows by that column (numbers by value, text
# alphabetically; again to reverse); click a figure to enlarge it, again (or Escape) to close.
# On load a self-test sorts a detached table and writes the outcome to
# <body data-sort-self-test="ok|failed">, so a headless browser can check the script runs.
SCRIPT = """
(function () {
  function key(cell) {
    var text = cell.textContent.trim();
    var numeric = /^[+\\-\\u2212]?[0-9.]/.test(text);
    return numeric ? parseFloat(text.replace("\\u2212", "-")) : text.toLowerCase();
  }
  function compare(a, b) {
    if (typeof a === typeof b) { return a < b ? -1 : a > b ? 1 : 0; }
    return typeof a === "number" ? -1 : 1;
  }
  function sortTable(table, column, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) {
      var order = compare(key(r.cells[column]), key(s.cells[column]));
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    var heads = table.tHead.rows[table.tHead.rows.length - 1].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    heads[column].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  function selfTest() {
    var table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>m</th><th>v</th></tr></thead><tbody>" +
      "<tr><td>b</td><td>10.5</td></tr><tr><td>a</td><td>9.25 ± 1</td></tr>" +
      "<tr><td>c</td><td>-3</td></tr></tbody>";
    function names() {
      return [].map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent; });
    }
    sortTable(table, 1, false);
    var first = names().join("");
    sortTable(table, 0, true);
    return first === "cab" && names().join("") === "cba";
  }
  window.annealbenchSortTable = sortTable;
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    var heads = table.tHead.rows[table.tHead.rows.length - 1].cells;
    [].forEach.call(heads, function (head, column) {
      head.title = "click to sort";
      head.addEventListener("click", function () {
        sortTable(table, column, head.getAttribute("aria-sort") === "ascending");
      });
    });
  });
  document.querySelectorAll("figure img").forEach(function (image) {
    image.title = "click to enlarge";
    image.addEventListener("click", function () { image.classList.toggle("zoomed"); });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    document.querySelectorAll("img.zoomed").forEach(function (i) { i.classList.remove("zoomed"); });
  });
  document.body.setAttribute("data-sort-self-test", selfTest() ? "ok" : "failed");
})();
"""


def slug(text: str) -> str:
    """An HTML id from a heading: lower case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI for an inline image."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class Page:
    """An HTML page built section by section; text arguments are escaped, ``raw`` is not."""

    title: str
    parts: list[str] = field(default_factory=list)
    contents: list[tuple[str, str]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        """A heading; every level-2 heading gets an id and an entry in the table of contents."""
        if level == 2 and anchor is None:
            anchor = slug(text)
        ident = f' id="{html.escape(anchor)}"' if anchor else ""
        if level == 2 and anchor:
            self.contents.append((anchor, text))
        self.parts.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def code(self, text: str) -> None:
        """A block of source text, shown as it is (escaped, whitespace kept)."""
        self.parts.append(f'<pre class="source"><code>{html.escape(text)}</code></pre>')

    def definitions(self, items: Iterable[tuple[str, str]], css_class: str | None = None) -> None:
        body = "".join(
            f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in items
        )
        cls = f' class="{css_class}"' if css_class else ""
        self.parts.append(f"<dl{cls}>{body}</dl>")

    def figure(self, png: bytes, alt: str, caption: str) -> None:
        self.parts.append(
            f'<figure><img src="{png_data_uri(png)}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table_of_contents(self) -> str:
        items = "".join(
            f'<li><a href="#{html.escape(anchor)}">{html.escape(text)}</a></li>'
            for anchor, text in self.contents
        )
        return f'<nav class="toc"><b>Contents</b><ol>{items}</ol></nav>' if items else ""

    def render(self, heading: str | None = None) -> str:
        """The page; ``heading`` (default: the title) heads it, the contents follow."""
        body = "\n".join(self.parts)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n<h1>{html.escape(heading or self.title)}</h1>\n"
            f"{self.table_of_contents()}\n{body}\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
        )
