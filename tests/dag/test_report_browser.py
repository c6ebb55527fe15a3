"""The HTML report (`snakemake --report`) in a real headless browser: Debian's Chromium, driven by
Playwright (which launches /usr/bin/chromium and downloads no browser of its own).

The report is a single-page JavaScript app.  The test builds it from a real run of part of the smoke
DAG (the GDLN experiment: five jobs), opens it, navigates to every figure as a reader would
(category, subcategory, the eye button), and checks that the browser decoded each image at the
size of the PNG on disk, and that the console showed no error.  A screenshot is kept in the pytest
tmp dir; its path is printed.

Hostile text: before the report is built, the test writes a string that closes the report's
``<script>`` and opens its own into a cell of a table the report embeds and into that table's
caption.  Where text reaches the page (docs/integrity.md lists each way in): a caption is
reStructuredText that docutils renders with ``<>&`` escaped; a table or figure is embedded as a
base64 ``data:`` URI (a download, or PNG pixels), never as markup.  The page must show the string as
text and run none of it.
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
from pathlib import Path

import pytest

from conftest import copy_project, snakemake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (`make system-deps` installs it as root)"
    ),
]
# As root in a container: no sandbox; and no background traffic (the network is closed, and
# component updates, sync and field trials would only log errors).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET = "plot_gdln"  # a rule with figures and a table, and no training: the cheapest real report
HOSTILE_TABLE = "results/tables/gdln_checks.csv"
HOSTILE_CAPTION = "workflow/report/tables/gdln_checks.rst"
# closes the inline <script> that holds the report's data, runs its own; an image whose error runs code
HOSTILE = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">\'&'


def plant_hostile_text(root: Path) -> None:
    """The hostile string in one cell of a table the report embeds, and in that table's caption."""
    with (root / HOSTILE_TABLE).open(newline="") as f:
        rows = list(csv.reader(f))
    rows.append([HOSTILE] + [""] * (len(rows[0]) - 1))
    with (root / HOSTILE_TABLE).open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with (root / HOSTILE_CAPTION).open("a") as f:
        f.write(f"\nA corpus named {HOSTILE} in the data.\n")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    """(project root, report.html) built by Snakemake from a real run."""
    root = copy_project(tmp_path_factory.mktemp("report"))
    # a flag before the target ends the list of --configfile values
    snakemake(root, "--printshellcmds", TARGET)
    plant_hostile_text(root)
    snakemake(root, "--report", "results/report.html", TARGET)
    return root, root / "results/report.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright  # pinned in requirements.lock; a missing one fails

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser, report):
    """The report, loaded; ``page.problems`` collects console errors and uncaught exceptions."""
    page = browser.new_page()
    page.problems = []
    page.on(
        "console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text} ({m.location})")
    )
    page.on("pageerror", lambda error: page.problems.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda r: page.problems.append(f"request failed: {r.url[:100]} {r.failure}"))
    page.goto(report[1].as_uri(), wait_until="load")
    page.get_by_text("Results", exact=False).first.wait_for()  # the app rendered its menu
    yield page
    page.close()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def show(page, category: str, subcategory: str, path: str, button: str = "eye") -> None:
    """Open one result as a reader does: home, then down the menu (which skips a level with only
    one entry: a single category, a default subcategory) to the result's row, then its eye button
    (or another: ``information-circle`` shows its caption)."""
    page.locator("nav ol a").first.click()  # home: the first link of the breadcrumbs
    row = page.locator("tr", has_text=path)
    for label in ("Results", category, subcategory):
        if row.count():
            break
        if (item := page.locator("a", has=page.get_by_text(label, exact=True))).count():
            item.first.click()
    row.first.locator(f"a[iconname={button}]").click()


def test_the_report_loads_without_console_errors(page):
    assert page.title() == "Snakemake Report"
    assert not page.locator("#loading-animation").is_visible()
    page.get_by_text("Statistics", exact=True).click()  # another view of the app
    page.get_by_text("Workflow", exact=True).click()
    assert page.problems == []


def test_every_figure_renders_at_its_own_size(page, report, tmp_path):
    root, _ = report
    listed = page.evaluate(
        "() => Object.fromEntries(Object.entries(results).map(([p, r]) => [p, r.mime_type]))"
    )
    placed = page.evaluate("() => categories")  # {category: {subcategory: [paths]}}
    figures = {path for path, mime in listed.items() if mime.startswith("image/")}
    on_disk = {str(p.relative_to(root)) for p in (root / "results").rglob("*.png")}
    assert figures, "the report lists no figure"
    assert on_disk <= figures, f"figures made but missing from the report: {sorted(on_disk - figures)}"
    where = {
        path: (category, subcategory)
        for category, subs in placed.items()
        for subcategory, paths in subs.items()
        for path in paths
    }
    for path in sorted(figures):
        show(page, *where[path], path)
        name = Path(path).name
        image = page.locator(f'img[src*="filename={name};"]')
        image.wait_for(state="visible")
        decoded = image.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
        box = image.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, (path, box)
        if path.endswith(".png"):
            assert tuple(decoded) == png_size(root / path), path
        else:
            assert min(decoded) > 0, path
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the report showing {sorted(figures)[-1]}: {shot}")
    assert shot.stat().st_size > 10_000
    assert page.problems == []


def test_hostile_text_in_data_and_captions_shows_as_text_and_runs_no_script(page, report):
    root, html = report
    assert HOSTILE.encode() not in html.read_bytes(), "the hostile string is in the page unescaped"
    placed = page.evaluate("() => categories")
    [(category, subcategory)] = [
        (c, s) for c, subs in placed.items() for s, ps in subs.items() if HOSTILE_TABLE in ps
    ]
    show(page, category, subcategory, HOSTILE_TABLE, button="information-circle")
    caption = page.get_by_text("A corpus named", exact=False)
    caption.wait_for(state="visible")
    assert HOSTILE in caption.inner_text()  # shown as the text it is
    embedded = page.evaluate("path => fetch(results[path].data_uri).then(r => r.text())", HOSTILE_TABLE)
    assert [HOSTILE] in [row[:1] for row in csv.reader(io.StringIO(embedded))]  # a download, unchanged
    assert page.evaluate("() => window.__pwned") is None, "a script from the data ran"
    assert page.locator('img[src="x"]').count() == 0
    assert page.problems == []
