"""The docs site stays whole: the home page is the README, every page is in the navigation, and every
`docs/...` path the code or its messages cite exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_NOTE = ("**The manual is the docs site**: `mkdocs serve` (or `mkdocs build` → `site/index.html`) from a\n"
               "checkout with the `docs` extra; its pages are the Markdown files in [`docs/`](docs/index.md).\n")
SITE_NOTE = ("This site is the manual; build it with `mkdocs build --strict` (or `mkdocs serve`) from a checkout\n"
             "with the `docs` extra. The same text is the repository's README.\n")


def test_the_home_page_is_the_readme_with_site_links():
    readme = (REPO / "README.md").read_text()
    assert README_NOTE in readme
    expected = readme.replace(README_NOTE, SITE_NOTE).replace("](docs/", "](")
    assert (DOCS / "index.md").read_text() == expected, "docs/index.md differs from README.md: regenerate it"


def test_every_page_is_in_the_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = {p.name for p in DOCS.glob("*.md")}
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", nav, re.M))
    assert pages == listed, f"pages and nav differ: {sorted(pages ^ listed)}"


def test_every_cited_docs_path_exists():
    cited = set()
    for path in list((REPO / "mmad").rglob("*.py")) + list((REPO / "conventional").rglob("*.py")):
        cited |= {(path, m) for m in re.findall(r"docs/[\w-]+\.(?:md|png)", path.read_text())}
    missing = sorted(f"{path.relative_to(REPO)}: {m}" for path, m in cited if not (REPO / m).exists())
    assert cited and missing == []
