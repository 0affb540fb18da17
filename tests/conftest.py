"""Shared fixtures. The core suite runs on data the tests generate; tests that read ../shared skip
with a reason when it is absent (a user's clone has none)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEMPLATES = SHARED / "madbench" / "templates"


@pytest.fixture
def shared_templates() -> Path:
    if not TEMPLATES.is_dir():
        pytest.skip(f"reference templates not found at {TEMPLATES} (../shared is absent in a user's clone)")
    return TEMPLATES


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_industry_subset(root: Path, dataset: str, subset: str, per_level: int = 3, levels: int = 4,
                         train: int = 5, size: tuple[int, int] = (32, 32)) -> Path:
    """A tiny subset in the published Industry layout; returns its template path."""
    base = root / "Industry" / dataset / subset
    for i in range(train):
        write_image(base / "train" / "good" / f"{i:03d}.png", seed=1000 + i, size=size)
    rows = []
    for level in range(levels):
        for i in range(per_level):
            rel = f"good_level_0/{i:03d}.png" if level == 0 else f"defect_level_{level}/{i:03d}.png"
            write_image(base / "test" / rel, seed=100 * level + i, size=size)
            rows.append([rel, f"{level}.0"])
    return write_csv(root / "template" / f"{dataset}_{subset}_template.csv", ["Path", "Severity"], rows)


@pytest.fixture
def server():
    """The local wire server (both vendors' formats, injectable faults), stopped after the test."""
    from tests.wire_server import WireServer
    srv = WireServer().start()
    yield srv
    srv.stop()


def cli_env(tmp_path: Path, key: str = "k", **extra: str) -> dict[str, str]:
    """The environment of a `mmad` subprocess: a key for both vendors, the test's cache and data root."""
    return dict(os.environ, OPENAI_API_KEY=key, ANTHROPIC_API_KEY=key, MMAD_CACHE_DIR=str(tmp_path / "cache"),
                MMAD_DATA_ROOT=str(tmp_path / "data"), **extra)


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A data root with one discovered industrial dataset `toy` of two subsets."""
    make_industry_subset(tmp_path, "toy", "widget")
    make_industry_subset(tmp_path, "toy", "gear_box")
    return tmp_path


def run_engine(provider, plans, cache_dir: Path, events: list | None = None, *, meter=None, batch=None,
               **settings):
    """Run the engine once (fast backoff, image threads), close the provider and the cache."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from mmad.cache.store import ResponseCache
    from mmad.engine.runner import Engine, EngineSettings
    options = dict(backoff_initial=0.01, backoff_max=0.05)
    options.update(settings)
    cache = ResponseCache(cache_dir)

    async def go():
        engine = Engine(provider, cache, EngineSettings(**options), meter=meter, batch=batch,
                        on_event=events.append if events is not None else None, executor=ThreadPoolExecutor(2))
        try:
            return await engine.run(plans)
        finally:
            await provider.aclose()
    try:
        return asyncio.run(go())
    finally:
        cache.close()


class FakeClock:
    """Time moves only when someone sleeps (or a test says so): rate-control waits cost no real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        import asyncio
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


@pytest.fixture(scope="session")
def view_demo(tmp_path_factory):
    """Runs of every kind on the demo data, made once for the view's tests (tests.view_demo)."""
    from tests.view_demo import view_demo_fixture
    return view_demo_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def qa_set(tmp_path_factory):
    """A small generated MMAD-QA set, once per test module."""
    from tests.qa_support import small_set
    return small_set(tmp_path_factory.mktemp("qa-set"))


@pytest.fixture
def qa_env(monkeypatch, tmp_path):
    """Keys and a private response cache for one QA test; the test's folder."""
    from tests.qa_support import KEY
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path
