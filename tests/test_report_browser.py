"""The demo report opened in a real headless browser (Chromium via Playwright), checked as a
person would look at it: the tables name the runs, every figure decodes, nothing errors or is
fetched, nothing is wider than a laptop screen, and in print every table fits the page width."""

from __future__ import annotations

import pytest

from mmad import cli
from tests.browser import browser_page, why_no_browser
from tests.report_demo import write_demo

REASON = why_no_browser()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no headless browser: {REASON}")
A4_LANDSCAPE_CONTENT_PX = 1046  # (297 mm - 2 x 10 mm margins) at 96 px per inch


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report-demo")
    folders = write_demo(out)
    assert cli.main(["report", *map(str, folders), "--root", str(out / "data"), "-o", str(out / "report.html")]) == 0
    return out / "report.html"


def texts(page, selector: str) -> list[str]:
    return page.locator(selector).all_inner_texts()


def test_the_page_as_a_person_sees_it(demo_report):
    with browser_page(1366, 768) as page:
        page.goto(demo_report.as_uri())
        page.wait_for_load_state("load")
        assert page.title() == "mmad report: 6 runs"
        table3_runs = [t.split()[0] for t in texts(page, "#rq1 tbody tr td:first-child")]
        assert table3_runs == ["gpt-4o-demo", "gpt-4o-paper-demo", "patchcore-3shot", "padim-3shot"]
        assert "patchcore-3shot-noise-3" in page.locator("#rq1").inner_text()  # named as an RQ6-only variant
        assert [t.split()[0] for t in texts(page, "#rq6 tbody tr td:first-child")] == ["patchcore-3shot"]
        assert texts(page, "#rq6 thead tr:last-child th")[1:] == ["Orig", "Brgt 3", "Noise 3"]
        assert len(texts(page, "#rq3 tbody tr")) == 4 and page.locator("#rq3 .missing").count() == 0
        assert len(texts(page, "#rq2 tbody tr")) == 3 + 4  # 3 x 3 correlations, then 4 runs' rank gaps
        spend = page.locator("#spend tbody tr", has_text="gpt-4o-demo").inner_text()
        assert "priced as gpt-4o" in spend and "$" in spend
        images = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(images) >= 6 and all(ok and width > 0 for ok, width, _ in images), images
        assert page.evaluate("document.documentElement.scrollWidth") <= 1366  # no sideways scrolling
        assert page.console_errors == []
        assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests


def test_print_layout_fits_the_page(demo_report):
    with browser_page(A4_LANDSCAPE_CONTENT_PX, 800) as page:
        page.goto(demo_report.as_uri())
        page.emulate_media(media="print")
        overflow = page.evaluate(
            "[...document.querySelectorAll('table, img')].map(e => e.getBoundingClientRect().right)"
            ".filter(r => r > document.documentElement.clientWidth + 1)")
        assert overflow == []
        pdf = page.pdf(format="A4", landscape=True, print_background=True)
        assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 3


def test_a_phone_reads_the_report(demo_report):
    """At 400 px the navigation wraps instead of pushing the page sideways, and each figure keeps a
    readable size (at least 640 px wide, scrolling inside its own frame) instead of shrinking to a
    third of it; screenshot kept in artifacts/report-400.png."""
    from tests.view_shots import REPO
    with browser_page(400, 800) as page:
        page.goto(demo_report.as_uri())
        page.wait_for_load_state("load")
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        rights = page.evaluate("[...document.querySelectorAll('nav a')].map(a => a.getBoundingClientRect().right)")
        assert len(rights) >= 6 and max(rights) <= 400
        widths = page.evaluate("[...document.querySelectorAll('figure img')].map(i => i.getBoundingClientRect().width)")
        assert widths and min(widths) >= 640
        page.screenshot(path=str(REPO / "artifacts" / "report-400.png"))
        assert page.console_errors == []
