"""The HTML report (`snakemake --report`) in a real headless browser: Debian's Chromium, driven by
Playwright (which launches /usr/bin/chromium and downloads no browser of its own).

The report is a single-page JavaScript app.  The test builds it from a real run of part of the smoke
DAG (the GDLN experiment: five jobs), opens it, navigates to every figure as a reader would
(category, subcategory, the eye button), and checks that the browser decoded each image at the
size of the PNG on disk, and that the console showed no error.  A screenshot is kept in the pytest
tmp dir; its path is printed.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    """(project root, report.html) built by Snakemake from a real run."""
    root = copy_project(tmp_path_factory.mktemp("report"))
    # a flag before the target ends the list of --configfile values
    snakemake(root, "--printshellcmds", TARGET)
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


def show(page, category: str, subcategory: str, path: str) -> None:
    """Open one result as a reader does: home, then down the menu (which skips a level with only
    one entry: a single category, a default subcategory) to the result's row, then its eye button."""
    page.locator("nav ol a").first.click()  # home: the first link of the breadcrumbs
    row = page.locator("tr", has_text=path)
    for label in ("Results", category, subcategory):
        if row.count():
            break
        if (item := page.locator("a", has=page.get_by_text(label, exact=True))).count():
            item.first.click()
    row.first.locator("a[iconname=eye]").click()


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
