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
