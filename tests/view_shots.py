"""`mmad view` as a user starts it (a subprocess that prints its URL), and the screenshots of it that
the docs and the browser tests keep."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTEFACTS = REPO / "artifacts" / "view"  # ignored by git: screenshots the browser tests keep


@contextmanager
def running_view(cwd: Path, *args: str):
    """`mmad view --no-open --port 0 ARGS` in `cwd`; yields its URL; stopped (by its PID) afterwards."""
    env = dict(os.environ, MMAD_DATA_ROOT=str(cwd / "data"), MMAD_QA_ROOT=str(cwd / "mmad-qa"))
    proc = subprocess.Popen([sys.executable, "-m", "mmad.cli", "view", "--no-open", "--port", "0", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not found:
            raise RuntimeError(f"mmad view did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}")
        yield found.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_ids(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url + "api/runs.json") as response:
        return {run["name"]: run["rid"] for run in json.load(response)["runs"]}


def unready(page) -> None:
    """Clear the page's ready mark before navigating within it, so the next wait sees the new page
    (a hash change keeps the document, and the old page's mark, until the new one is drawn)."""
    if page.url.startswith(("http", "file")):
        page.evaluate("() => { const m = document.getElementById('app'); if (m) delete m.dataset.ready; "
                      "const v = document.querySelector('section.verdict'); if (v) delete v.dataset.ready; }")


def shoot(page, url: str, path: Path, *, ready: str = "main[data-ready='1']", full_page: bool = False) -> None:
    unready(page)
    page.goto(url)
    page.wait_for_selector(ready, timeout=20_000)
    page.wait_for_function("[...document.images].every(i => i.complete || i.loading === 'lazy')")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)


def docs_screenshots(out: Path, docs: Path) -> None:
    """docs/view-runs.png (the runs page) and docs/view-item.png (a hybrid item: references, the
    contour image, the query, as sent), at 1,400 px."""
    from tests.browser import browser_page
    with running_view(out) as url:
        ids = run_ids(url)
        hybrid = next(rid for name, rid in ids.items() if "hybrid" in name)
        with browser_page(1400, 900) as page:
            shoot(page, url + "#/runs", docs / "view-runs.png")
            shoot(page, url + f"#/item/{hybrid}/33", docs / "view-item.png", full_page=False)
            page.set_viewport_size({"width": 1400, "height": 1200})
            first, second = ids["gpt-4o"], ids["gpt-4o+industrial-paper"]
            shoot(page, url + f"#/compare/{first}/{second}", docs / "view-compare.png",
                  ready="section.verdict[data-ready='1']")
