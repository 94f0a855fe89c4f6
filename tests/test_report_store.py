"""The report from real (hand-made) stores through the CLI: every file, a partial study, a
diverged run, a grid of another shape, the page in headless Chromium, and bad input."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from annealbench.cli import app
from annealbench.store import Store

METHODS = ("0.1", "exp", "sig", "sig+")  # a grid of another shape than the paper's 12
MODELS = ("nn2", "lenet4")
SEEDS = range(6)
EPOCHS = 10
BASE = {"0.1": 88.0, "exp": 90.0, "sig": 90.5, "sig+": 91.0}


def accuracy(method: str, model: str, seed: int, epoch: int) -> float:
    """Known test accuracies: the score of a 10-epoch run is its last epoch. The seed effect
    differs a little per method so paired differences have no ties (exact Wilcoxon)."""
    slope = 0.2 + 0.02 * METHODS.index(method)
    return BASE[method] + (0.5 if model == "lenet4" else 0.0) + slope * seed + 0.1 * epoch


def record(epoch: int, acc: float, lr: float = 0.05) -> dict[str, float]:
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": 0.5,
        "train_acc": acc,
        "test_loss": 0.4,
        "test_acc": acc,
        "wall_time": 0.1,
    }


def config(model: str, method: str, seed: int) -> dict[str, object]:
    return {"dataset": "mnist", "model": model, "method": method, "seed": seed, "epochs": EPOCHS}


def make_store(path: Path) -> None:
    """mnist x 2 models x 4 methods x 6 seeds; lenet4/0.1/seed 5 diverged at epoch 3; nn2/sig+
    has 2 more seeds pending and one running (a study still running)."""
    with Store(path) as store:
        study = store.ensure_study("quick", {"grid": "test"})
        for model in MODELS:
            for method in METHODS:
                for seed in SEEDS:
                    if (model, method, seed) == ("lenet4", "0.1", 5):
                        epochs = [record(1, 60.0), record(2, 40.0), {**record(3, 10.0)}]
                        epochs[2]["train_loss"] = math.nan
                        store.add_result(study, config(model, method, seed), "diverged", epochs)
                        continue
                    epochs = [
                        record(e, accuracy(method, model, seed, e)) for e in range(1, EPOCHS + 1)
                    ]
                    store.add_result(study, config(model, method, seed), "done", epochs)
        store.add_runs(study, [config("nn2", "sig+", s) for s in (6, 7, 8)])
        claim = store.claim_next(study)
        assert claim is not None
        store.record_epoch(claim, record(1, 50.0))  # seed 6 is running, epoch 1 stored


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("report")
    store = folder / "results.sqlite"
    make_store(store)
    before = file_digest(store)
    out = folder / "out"
    result = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(out)])
    return {"result": result, "out": out, "store": store, "before": before}


def test_the_cli_writes_the_report_and_prints_its_path(report: dict) -> None:
    result = report["result"]
    assert result.exit_code == 0, result.output
    html = report["out"] / "report.html"
    assert f"report: {html.resolve()}" in result.output
    for name in (
        "summary.csv",
        "epochs.csv",
        "scores.csv",
        "paired_tests.csv",
        "ranks.csv",
        "missing.csv",
        "tables.md",
        "tables.tex",
        "report.html",
        "figures/schedules.png",
        "figures/schedules.pdf",
        "figures/accuracy_mnist.png",
        "figures/accuracy_mnist.pdf",
        "figures/lr_mnist.png",
        "figures/lr_mnist.pdf",
    ):
        assert (report["out"] / name).stat().st_size > 0, name
    assert (report["out"] / "figures/schedules.pdf").read_bytes().startswith(b"%PDF")


def test_the_store_is_left_unchanged(report: dict) -> None:
    assert file_digest(report["store"]) == report["before"]


def test_summary_csv_has_the_definitions_values(report: dict) -> None:
    summary = pd.read_csv(report["out"] / "summary.csv", dtype={"method": str})
    required = ["dataset", "model", "method", "trials", "ave", "max", "peak", "std"]
    required += ["ci_low", "ci_high", "paper_ave", "paper_max", "diverged"]
    assert set(required) <= set(summary.columns)
    assert len(summary) == len(MODELS) * len(METHODS)
    cell = summary.set_index(["model", "method"]).loc[("nn2", "exp")]
    # Score = last epoch = 90 + 0.22 seed + 1.0; seeds 0..5 -> mean 91.55, max 92.1.
    assert cell["trials"] == 6
    assert cell["ave"] == pytest.approx(91.55)
    assert cell["max"] == pytest.approx(92.1)
    assert cell["peak"] == pytest.approx(92.1)
    assert cell["std"] == pytest.approx(0.22 * pd.Series(SEEDS).std())
    assert cell["paper_ave"] == 98.44 and cell["paper_max"] == 98.59  # Table 2


def test_diverged_runs_are_flagged_and_left_out(report: dict) -> None:
    summary = pd.read_csv(report["out"] / "summary.csv", dtype={"method": str})
    cell = summary.set_index(["model", "method"]).loc[("lenet4", "0.1")]
    assert (cell["trials"], cell["diverged"]) == (5, 1)
    assert cell["ave"] == pytest.approx(88.5 + 1.0 + 0.2 * 2)  # seeds 0..4 only (mean 2)
    markdown = (report["out"] / "tables.md").read_text()
    assert "| LeNet-4 | 89.90†1 |" in markdown


def test_a_partial_store_says_what_is_missing(report: dict) -> None:
    missing = pd.read_csv(report["out"] / "missing.csv", dtype={"method": str})
    assert missing[["model", "method", "missing", "missing_detail"]].values.tolist() == [
        ["nn2", "sig+", 3, "2 pending, 1 running"]
    ]
    html = (report["out"] / "report.html").read_text()
    assert "This study is not finished: runs not done yet: 3 " in html
    markdown = (report["out"] / "tables.md").read_text()
    assert "**92.65**\\*" in markdown  # nn2 sig+: 92 + 0.26 * 2.5, best and incomplete


def test_the_tables_show_only_the_methods_that_ran(report: dict) -> None:
    markdown = (report["out"] / "tables.md").read_text()
    assert "| ave | 0.1 | exp | sig | sig+ |" in markdown
    latex = (report["out"] / "tables.tex").read_text()
    # the paper's layout, the side-by-side, the distance to the paper
    assert latex.count("\\begin{table}") == 3
    assert "str+" not in latex


def test_epochs_csv_has_every_stored_epoch(report: dict) -> None:
    epochs = pd.read_csv(report["out"] / "epochs.csv", dtype={"method": str})
    required = ["dataset", "model", "method", "seed", "epoch", "lr", "train_loss", "train_acc"]
    assert set([*required, "test_loss", "test_acc"]) <= set(epochs.columns)
    done = len(MODELS) * len(METHODS) * len(SEEDS) - 1
    assert len(epochs) == done * EPOCHS + 3 + 1  # + the diverged run's 3, the running run's 1
    assert epochs.loc[epochs["status"] == "diverged", "train_loss"].isna().sum() == 1


def test_paired_tests_csv_pairs_six_seeds_with_wilcoxon(report: dict) -> None:
    tests = pd.read_csv(report["out"] / "paired_tests.csv", dtype={"method": str})
    row = tests[(tests["model"] == "nn2") & (tests["against"] == "best")].set_index("method")
    # sig+ beats sig by 0.5 + 0.02 seed, exp by 1.0 + 0.04 seed, 0.1 by 3.0 + 0.06 seed.
    assert set(row.index) == {"0.1", "exp", "sig"}
    html = (report["out"] / "report.html").read_text()
    assert "sig+ is the best method of every row: its tests are the ones above." in html
    assert (row["test"] == "wilcoxon").all() and (row["pairs"] == 6).all()
    assert row["p_value"].tolist() == pytest.approx([2 / 64] * 3)
    assert row.loc["sig", "diff"] == pytest.approx(-0.55)
    ranks = pd.read_csv(report["out"] / "ranks.csv", dtype={"method": str})
    assert ranks["method"].tolist() == ["sig+", "sig", "exp", "0.1"]
    assert ranks["mean_rank"].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_a_study_not_started_yet_reports_what_is_missing(tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    with Store(store) as handle:
        study = handle.ensure_study("quick", {})
        handle.add_runs(study, [config("nn2", m, s) for m in ("exp", "sig+") for s in (0, 1)])
    code, output = run_cli("--store", str(store), "--out", str(tmp_path / "out"))
    assert code == 0, output
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "| NN-2 | …\\* | …\\* |" in markdown
    missing = pd.read_csv(tmp_path / "out" / "missing.csv", dtype={"method": str})
    assert missing["missing_detail"].tolist() == ["2 pending", "2 pending"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "No run of this dataset has finished yet" in html
    assert html.count("<img ") == 1  # Figure 1 only
    assert not list((tmp_path / "out" / "figures").glob("accuracy_*"))


# -- the page in a real browser ----------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]

# Appended to a copy of the page: after load, write what the browser rendered into the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, src: i.src.slice(0, 22)}));
  const tables = document.querySelectorAll("table.results").length;
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, tables, title: document.title});
  document.body.appendChild(out);
});
</script>"""


def render_in_chromium(page: Path, tmp_path: Path) -> dict:
    """Open ``page`` in headless Chromium and return what the probe saw."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "chromium is not installed: the report's browser test needs it "
            "(Debian: apt-get install chromium; `bash scripts/system-deps.sh` installs it)"
        )
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    done = subprocess.run(
        [*command, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.find('<pre id="probe">')
    assert start >= 0, f"the page's probe did not run; stderr: {done.stderr[-2000:]}"
    text = done.stdout[start + len('<pre id="probe">') : done.stdout.find("</pre>", start)]
    return json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))


def test_report_html_renders_in_headless_chromium(report: dict, tmp_path: Path) -> None:
    page = report["out"] / "report.html"
    seen = render_in_chromium(page, tmp_path)
    assert seen["title"].startswith("annealbench report")
    # mnist's accuracy, loss and learning-rate figures, and Figure 1.
    assert len(seen["images"]) == 4
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0, image
        assert image["src"] == "data:image/png;base64,"
    # Which method is best, the paper's layout, every cell with its uncertainty,
    # side-by-side, tests against the best (sig+ here, so no second matrix), ranks, missing,
    # and the distance to the paper (per row, per cell, its orderings).
    assert seen["tables"] == 10


def test_report_html_needs_nothing_outside_the_file(report: dict) -> None:
    html = (report["out"] / "report.html").read_text()
    for external in ('src="http', "src='http", 'href="http', "@import", "url("):
        assert external not in html
    assert html.count('<img src="data:image/png;base64,') == 4


def code_in(html: str) -> list[str]:
    """Everything in ``html`` that runs code: script elements (``<script src=...>`` when
    fetched from elsewhere), event-handler attributes (``onload=``...), javascript: URLs."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Finder(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "script":
                found.append("<script src=...>" if dict(attrs).get("src") else "<script>")
            for name, value in attrs:
                if name.startswith("on"):
                    found.append(f"<{tag} {name}=...>")
                if (value or "").strip().lower().startswith("javascript:"):
                    found.append(f"<{tag} {name}={value}>")

    Finder().feed(html)
    return found


def test_report_html_runs_no_code_but_its_one_inline_script(report: dict) -> None:
    """README: one small inline script (sorting, enlarging figures): nothing fetched, no
    event-handler attributes, no javascript: links."""
    assert code_in((report["out"] / "report.html").read_text()) == ["<script>"]


def test_the_code_check_finds_code() -> None:
    page = (
        '<p>script is a word, onload too</p><script src="a.js"></script><SCRIPT>x()</SCRIPT>'
        '<img src="data:," onerror="x()"><a href=" JavaScript:x()">x</a>'
    )
    assert code_in(page) == [
        "<script src=...>", "<script>", "<img onerror=...>", "<a href= JavaScript:x()>"
    ]  # fmt: skip


def test_the_browser_check_catches_a_broken_image(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        '<html><head><title>t</title></head><body><img alt="x" src="data:image/png;base64,AAAA">'
        "</body></html>"
    )
    seen = render_in_chromium(page, tmp_path)
    assert seen["images"][0]["width"] == 0


# -- bad input -----------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["report", *args])
    return result.exit_code, result.output


def test_an_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "empty.sqlite"
    with Store(store) as handle:
        handle.ensure_study("quick", {})
    before = file_digest(store)
    code, output = run_cli("--store", str(store), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "error:" in output and "holds no runs" in output
    assert file_digest(store) == before
    assert not (tmp_path / "out").exists()  # nothing is written for a store with nothing


def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("these are not results\n" * 20)
    code, output = run_cli("--store", str(text), "--out", str(tmp_path / "out"))
    assert code == 2 and "not an annealbench results store" in output
    assert text.read_text() == "these are not results\n" * 20


def test_a_missing_store_and_a_folder_are_refused(tmp_path: Path) -> None:
    code, output = run_cli("--store", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path / "o"))
    assert code == 2 and "no results store at" in output
    code, output = run_cli("--store", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "is a folder" in output


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    with Store(store) as handle:
        study = handle.ensure_study("quick", {})
        handle.add_result(study, config("nn2", "sig", 0), "done", [record(1, 90.0)])
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, output = run_cli("--store", str(store), "--out", str(blocker / "report"))
    assert code == 2
    assert f"cannot write the report to {blocker / 'report'}" in output


def test_several_studies_need_a_study_name(tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    with Store(store) as handle:
        for name in ("quick", "full"):
            study = handle.ensure_study(name, {})
            handle.add_result(study, config("nn2", "sig", 0), "done", [record(1, 90.0)])
    code, output = run_cli("--store", str(store), "--out", str(tmp_path / "out"))
    assert code == 2 and "several studies (quick, full); pass --study NAME" in output
    code, output = run_cli(
        "--store", str(store), "--out", str(tmp_path / "out"), "--study", "other"
    )
    assert code == 2 and "no study 'other'" in output
