"""What a wheel needs: every package listed, every asset inside the package."""

import tomllib
from pathlib import Path

from mmad.config import PACKAGED_PROMPTS, asset

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {name: folder for name, folder in config["package-dir"].items()}
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "mmad").rglob("__init__.py")}
    found |= {name for name, folder in mapped.items() if (REPO / folder / "__init__.py").exists()}
    assert found == listed, f"pyproject.toml packages differ from the tree: {sorted(found ^ listed)}"


def test_assets_ship_inside_the_package():
    assert PACKAGED_PROMPTS.is_dir() and (PACKAGED_PROMPTS / "industrial.toml").is_file()
    assert asset("prices.toml").is_file()
    assert (REPO / "mmad") in PACKAGED_PROMPTS.parents


def test_the_views_front_end_ships_in_the_wheel():
    """Every file of mmad/view/static (the page, its CSS and scripts: no CDN) matches a package-data
    pattern, and the page names only files that are there."""
    import fnmatch
    import re
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mmad"]
    static = REPO / "mmad" / "view" / "static"
    files = [p.relative_to(REPO / "mmad").as_posix() for p in static.rglob("*") if p.is_file()]
    assert {"view/static/index.html", "view/static/app.css", "view/static/js/core.js"} <= set(files)
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, pattern) and f.count("/") == pattern.count("/")
                                             for pattern in patterns)]
    assert unshipped == []
    page = (static / "index.html").read_text()
    named = re.findall(r'(?:src|href)="(static/[^"]+)"', page)
    assert len(named) >= 7 and all((static.parent / name).is_file() for name in named)
    assert "http://" not in page and "https://" not in page
