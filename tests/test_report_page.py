"""The page in headless Chromium: no console error, the sort script's self-test passes, a
click on a header sorts the rows, a click on a figure enlarges it; no network URL anywhere."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from annealbench.report import report_store
from test_report_provenance import make_store

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
]

# Appended to a copy of the page: click the "ave" header of the first sortable table with one,
# twice, and the first figure, then write what happened into the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const table = [...document.querySelectorAll("table.sortable")].find(
    t => [...t.tHead.rows[0].cells].some(c => c.textContent === "ave"));
  const heads = [...table.tHead.rows[0].cells];
  const column = heads.findIndex(c => c.textContent === "ave");
  const values = () => [...table.tBodies[0].rows].map(r => parseFloat(r.cells[column].textContent));
  heads[column].click();
  const up = values();
  heads[column].click();
  const down = values();
  const image = document.querySelector("figure img");
  image.click();
  const zoomed = image.classList.contains("zoomed") && getComputedStyle(image).position;
  const out = document.createElement("pre");
  out.id = "probe";
  const sort = heads[column].getAttribute("aria-sort");
  out.textContent = JSON.stringify({up, down, zoomed, sort});
  document.body.appendChild(out);
});
</script>"""


def chromium(page: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium)")
    command = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]
    done = subprocess.run(
        [*command, page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def console_errors(stderr: str) -> list[str]:
    """Console messages and uncaught errors of the page, as Chromium logs them to stderr."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("page")
    make_store(folder / "results.sqlite", epochs=10, seeds=6, subset=None)
    return report_store(folder / "results.sqlite", folder / "out").html


def test_the_page_loads_without_console_errors_and_its_self_test_passes(
    page: Path, tmp_path: Path
) -> None:
    done = chromium(page, tmp_path)
    assert console_errors(done.stderr) == []
    assert 'data-sort-self-test="ok"' in done.stdout


def test_the_console_check_catches_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>notDefined();</script></body></html>")
    errors = console_errors(chromium(broken, tmp_path).stderr)
    assert any("Uncaught ReferenceError" in line for line in errors)


def test_clicking_a_header_sorts_and_a_figure_enlarges(page: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = chromium(probed, tmp_path)
    assert console_errors(done.stderr) == []
    start = done.stdout.find('<pre id="probe">')
    assert start >= 0, done.stderr[-2000:]
    text = done.stdout[start + len('<pre id="probe">') : done.stdout.find("</pre>", start)]
    seen = json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))
    assert len(seen["up"]) >= 2
    assert seen["up"] == sorted(seen["up"]) and seen["down"] == sorted(seen["up"], reverse=True)
    assert seen["sort"] == "descending"
    assert seen["zoomed"] == "fixed"


def test_one_file_with_no_network_url(page: Path) -> None:
    html = page.read_text()
    assert re.findall(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", html) == []
    assert "@import" not in html and "url(" not in html
    assert html.count("<script>") == 1 and "<script src" not in html
    assert "<h1>" in html and html.index('id="best"') < html.index('id="definitions"')
