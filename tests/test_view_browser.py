"""`mmad view` in a real headless browser (Chromium via Playwright), on runs of every kind made by
`mmad` (tests.view_demo), served by `mmad view` in a subprocess as a user starts it: the runs page,
a run with the mis-ranked sort and filters, an item with its images as sent and its raw answer, two
variants side by side with compare's verdict, the keyboard, and the static export from file://.
Every page at 1,400 and 400 px: no sideways scrolling, no console error, nothing fetched from
elsewhere; screenshots are kept in artifacts/view/ (ignored by git)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.browser import browser_page, why_no_browser
from tests.view_shots import ARTEFACTS, run_ids, running_view, shoot, unready

REASON = why_no_browser()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no headless browser: {REASON}")
WIDTHS = (1400, 400)


@pytest.fixture(scope="module")
def served(view_demo):
    with running_view(view_demo.out) as url:
        yield url, run_ids(url)


def check_page(page, url: str, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "sideways scrolling"
    assert page.console_errors == []
    assert all(u.startswith((url, "data:")) for u in page.requests), page.requests


def data(page, selector: str) -> list[str]:
    return page.locator(selector).all_inner_texts()


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_page(served, width):
    url, ids = served
    with browser_page(width, 900) as page:
        shoot(page, url + "#/runs", ARTEFACTS / f"runs-{width}.png", full_page=True)
        rows = page.locator("table.runs tbody tr")
        assert rows.count() == 6 and page.locator("span.pending").count() == 0
        kinds = sorted(t.strip() for t in data(page, "table.runs tbody td.c-kind"))
        assert kinds == ["classify", "detector", "hybrid", "qa", "score", "score"]
        assert "$0." in page.locator(f"tr[data-rid='{ids['gpt-4o']}']").inner_text()
        page.fill("#runfilter", "industrial-paper")
        assert rows.count() == 1
        page.fill("#runfilter", "")
        if width >= 700:  # the column headers sort (twice: descending) ...
            page.click("th[data-key=auroc] button")
            page.click("th[data-key=auroc] button")
        else:  # ... and, where the table shows as cards, the sort menu
            page.select_option("select[aria-label='sort runs by']", "-auroc")
        values = [t for t in data(page, "table.runs tbody td.c-auroc") if t.strip() not in ("—", "")]
        assert values == sorted(values, key=float, reverse=True) and len(values) == 4
        page.check(f"tr[data-rid='{ids['gpt-4o']}'] input[type=checkbox]")
        page.check(f"tr[data-rid='{ids['gpt-4o+industrial-paper']}'] input[type=checkbox]")
        page.click("button.primary")
        page.wait_for_url("**#/compare/**")
        check_page(page, url, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_run_of_the_demo_data_and_the_misranked_sort(served, view_demo, width):
    from mmad.view.catalog import Catalog
    from mmad.view.items import load_items
    url, ids = served
    run = next(r for r in Catalog((view_demo.out / "results",)).scan() if r.name == "gpt-4o")
    items = load_items(run)
    with browser_page(width, 900) as page:
        shoot(page, url + f"#/run/{ids['gpt-4o']}", ARTEFACTS / f"run-{width}.png")
        assert page.locator("table.subsets tbody tr").count() == 3 and page.locator("svg.boxes").count() == 3
        assert page.locator("table.items tbody tr").count() == 36
        page.select_option("select[name=sort]", "mis")
        shown = [float(t) for t in data(page, "table.items tbody td[data-label='mis-ranked']")]
        assert shown == sorted(shown, reverse=True) and shown[0] == pytest.approx(max(items.misrank), abs=1e-3)
        worst = items.key[items.misrank.index(max(items.misrank))]
        assert worst in data(page, "table.items tbody a.itemlink")[:3]
        page.screenshot(path=str(ARTEFACTS / f"run-misranked-{width}.png"))
        page.select_option("select[name=lvl]", "0")
        assert set(data(page, "table.items tbody td[data-label=level]")) == {"0"}
        page.select_option("select[name=lvl]", "")
        reasons = [raw.split("Reason: ")[1] for raw in items.raw]
        # a reason found in no other answer (the filter matches text anywhere in the answer)
        one = next(i for i, r in enumerate(reasons) if sum(r.lower() in raw.lower() for raw in items.raw) == 1)
        page.fill("#itemfilter", reasons[one])
        page.wait_for_function("document.querySelectorAll('table.items tbody tr').length === 1")
        assert data(page, "table.items tbody a.itemlink") == [items.key[one]]
        assert "mis" in page.evaluate("location.hash") or "q=" in page.evaluate("location.hash")
        check_page(page, url, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_an_item_shows_the_images_as_sent_and_the_raw_answer(served, view_demo, width):
    from mmad.view.catalog import Catalog
    from mmad.view.items import load_items
    url, ids = served
    hybrid = next(r for r in Catalog((view_demo.out / "results",)).scan() if r.kind == "hybrid")
    items = load_items(hybrid)
    row = next(i for i in range(len(items)) if items.finals[i]["source"] == "live")
    with browser_page(width, 900) as page:
        shoot(page, url + f"#/item/{hybrid.rid}/{row}", ARTEFACTS / f"item-{width}.png", full_page=True)
        figures = page.locator(".gallery figure")
        assert figures.count() == 5  # three references, the contour image, the query
        decoded = page.evaluate("[...document.querySelectorAll('.gallery img')].map(i => [i.complete, i.naturalWidth])")
        assert all(ok and w == 96 for ok, w in decoded)
        assert "Contour Image" in figures.nth(3).inner_text() and "Inference Image" in figures.nth(4).inner_text()
        assert page.locator("p.good").count() == 1  # the rebuilt request has the record's cache key
        assert page.locator("pre.raw").inner_text() == items.finals[row]["raw"]
        assert "Inference Image :" in page.locator("details.prompt pre").inner_text()
        assert items.finals[row]["key"] in page.locator("code.key").inner_text()
        check_page(page, url, width)
        qa = next(rid for name, rid in ids.items() if "-qa-" in name)
        shoot(page, url + f"#/item/{qa}/0", ARTEFACTS / f"item-qa-{width}.png", full_page=True)
        assert page.locator("ol.options li").count() >= 2 and page.locator("section.qa").count() == 1
        assert page.locator("ol.options li.right .tag").count() == 1  # the right letter is marked
        assert page.locator(".gallery figure").count() == 2  # the template image and the query


@pytest.mark.parametrize("width", WIDTHS)
def test_two_variants_side_by_side(served, view_demo, width):
    from mmad.comparison.compare import compare_runs
    url, ids = served
    a, b = ids["gpt-4o"], ids["gpt-4o+industrial-paper"]
    expected = compare_runs(view_demo.folders["gpt-4o"], [view_demo.folders["gpt-4o+industrial-paper"]])
    with browser_page(width, 900) as page:
        shoot(page, url + f"#/compare/{a}/{b}", ARTEFACTS / f"compare-{width}.png",
              ready="section.verdict[data-ready='1']", full_page=True)
        assert data(page, "ul.verdicts li") == expected.comparisons[0].verdicts
        assert "36 items paired" in page.locator("main").inner_text()
        moves = [abs(float(t)) for t in data(page, "table.pairs tbody td[data-label='rank move']")]
        assert moves == sorted(moves, reverse=True) and len(moves) == 36
        page.locator("table.pairs tbody tr button").first.click()
        assert page.locator("tr.answers:not([hidden]) pre.raw").count() == 2
        check_page(page, url, width)


def test_the_keyboard_reaches_everything(served):
    url, ids = served
    with browser_page(1400, 900) as page:
        page.goto(url + "#/runs")
        page.wait_for_selector("main[data-ready='1']")
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "runfilter"
        page.keyboard.press("Escape")
        page.keyboard.press("j")
        assert page.evaluate("document.activeElement.className") == "runlink"
        unready(page)
        page.keyboard.press("Enter")
        page.wait_for_selector("main[data-ready='1'] table.items")
        page.keyboard.press("m")
        assert page.locator("select[name=sort]").input_value() == "mis"
        page.keyboard.press("j")
        first = page.evaluate("document.activeElement.textContent")
        unready(page)
        page.keyboard.press("Enter")
        page.wait_for_selector("main[data-ready='1'] code.key")
        assert page.locator("h1").inner_text() == first
        page.keyboard.press("]")
        page.wait_for_function("([t]) => document.querySelector('h1') && document.querySelector('h1').textContent !== t",
                               arg=[first])
        unready(page)
        page.keyboard.press("u")
        page.wait_for_selector("main[data-ready='1'] table.items")
        assert page.locator("select[name=sort]").input_value() == "mis"  # the list as it was
        tabbable = page.evaluate("[...document.querySelectorAll('a, button, input, select')].filter(e => e.tabIndex >= 0).length")
        assert tabbable > 40
        assert page.console_errors == []


def test_the_static_export_opens_from_file(view_demo, tmp_path):
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "mmad.cli", "view", "--export", str(out)], cwd=view_demo.out,
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "MMAD_DATA_ROOT": str(view_demo.out / "data"),
                               "MMAD_QA_ROOT": str(view_demo.out / "mmad-qa")})
    assert done.returncode == 0, done.stderr
    home = (out / "index.html").as_uri()
    with browser_page(1400, 900) as page:
        shoot(page, home + "#/runs", ARTEFACTS / "export-runs-1400.png")
        assert page.locator("table.runs tbody tr").count() == 6 and page.locator("span.pending").count() == 0
        unready(page)
        page.locator("a.runlink", has_text="hybrid").click()
        page.wait_for_selector("main[data-ready='1'] table.items")
        page.select_option("select[name=sort]", "mis")
        page.fill("#itemfilter", "off-texture")
        page.wait_for_function("location.hash.includes('q=off-texture') && "
                               "!/loading/.test(document.querySelector('p.count').textContent)")
        unready(page)
        page.locator("table.items tbody a.itemlink").first.click()
        page.wait_for_selector("main[data-ready='1'] code.key")
        decoded = page.evaluate("[...document.querySelectorAll('.gallery img')].map(i => i.naturalWidth)")
        assert decoded and all(w > 0 for w in decoded)
        unready(page)
        page.goto(home + "#/runs")
        page.wait_for_selector("main[data-ready='1'] table.runs")
        for name in ("gpt-4o+industrial-paper", "gpt-4o"):  # the other, then the base: either order is exported
            row = page.locator("tr", has=page.locator("a.runlink", has_text=re.compile(f"^{re.escape(name)}$")))
            row.locator("input[type=checkbox]").check()
        unready(page)
        page.click("button.primary")
        page.wait_for_selector("section.verdict[data-ready='1']")
        assert page.locator("ul.verdicts li").count() == 3
        assert page.console_errors == []
        assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
