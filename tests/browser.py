"""A real headless browser for the report tests: Playwright for Python driving the system's
Chromium (Debian `apt-get install -y chromium`) through `executable_path`, so nothing is
downloaded (`playwright install` is never needed). `$MMAD_CHROMIUM` names another binary."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    if os.environ.get("MMAD_CHROMIUM"):
        return shutil.which(os.environ["MMAD_CHROMIUM"])  # None (skip) when it names nothing runnable
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def why_no_browser() -> str | None:
    """None when a browser test can run, else the reason to skip it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "no Chromium binary found (apt-get install -y chromium, or set MMAD_CHROMIUM)"
    return None


@contextmanager
def browser_page(width: int = 1366, height: int = 900):
    """A fresh page in headless Chromium, with console errors and requests recorded on it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.console_errors = []
            page.requests = []
            page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
            page.on("pageerror", lambda e: page.console_errors.append(str(e)))
            page.on("request", lambda r: page.requests.append(r.url))
            yield page
        finally:
            browser.close()


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 1500) -> None:
    """The first `height` pixels of the page at a laptop width, as PNG."""
    with browser_page(width, height) as page:
        page.goto(html.resolve().as_uri())
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=False)
