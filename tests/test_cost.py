"""Cost: price table, token formulas, estimates against what the wire server bills, budget, caching."""

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from mmad.cache.store import ResponseCache
from mmad.config import PACKAGED_PROMPTS
from mmad.cost.estimate import CostMeter, ModelPrice, TokenCounter, estimate_plans, load_prices
from mmad.cost.tokens import anthropic_image_tokens, openai_image_tokens
from mmad.data import datasets
from mmad.engine.jobs import build_plan
from mmad.errors import ConfigError
from mmad.providers.anthropic import AnthropicProvider
from mmad.providers.openai import OpenAIProvider
from tests.conftest import make_industry_subset, run_engine
from tests.wire_server import WireServer


@pytest.mark.parametrize("size,detail,model,expected", [
    ((1024, 1024), "high", "gpt-4o", 765),
    ((2048, 4096), "high", "gpt-4o", 1105),
    ((512, 512), "high", "gpt-4o", 255),
    ((4096, 8192), "low", "gpt-4o", 85),
    ((512, 512), "high", "gpt-4o-mini", 2833 + 5667),
])
def test_openai_tile_formula(size, detail, model, expected):
    assert openai_image_tokens(*size, model, detail) == expected


@pytest.mark.parametrize("size,expected", [((1000, 1000), 1334), ((200, 200), 54), ((1092, 1092), 1590),
                                           ((3000, 3000), 1600)])
def test_anthropic_image_formula(size, expected):
    assert anthropic_image_tokens(*size) == expected


def test_price_lookup_and_cost():
    prices = load_prices()
    assert prices.lookup("gpt-4o-2024-08-06").name == "gpt-4o"
    assert prices.lookup("gpt-4o-mini-2024-07-18").name == "gpt-4o-mini"
    assert prices.lookup("llava:13b") is None
    with pytest.raises(ConfigError, match="no price for model 'llava:13b'"):
        prices.require("llava:13b")
    price = ModelPrice("m", input=3.0, output=15.0, cached_input=0.3, cache_write=3.75, batch=0.5)
    usage = {"input_tokens": 1_000_000, "cached_input_tokens": 500_000, "cache_write_tokens": 100_000,
             "output_tokens": 100_000}
    assert price.cost(usage) == pytest.approx(0.4 * 3 + 0.5 * 0.3 + 0.1 * 3.75 + 0.1 * 15)
    assert price.cost(usage, batch=True) == pytest.approx(price.cost(usage) / 2)


def test_price_file_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "p.toml"
    path.write_text('date = "2030-01-01"\n[models."mymodel"]\ninput = 1\noutput = 2\n')
    monkeypatch.setenv("MMAD_PRICES", str(path))
    prices = load_prices()
    assert prices.date == "2030-01-01" and prices.require("mymodel").cached_input == 1.0
    path.write_text('[models."bad"]\ninput = "x"\n')
    with pytest.raises(ConfigError, match="needs numeric input and output"):
        load_prices()


def test_output_estimate_recalibrates_from_live_answers():
    meter = CostMeter(ModelPrice("m", 1.0, 1_000_000.0, 1.0, 1.0), TokenCounter("anthropic", "m"))
    from mmad.providers.base import Request
    request = Request("s", ("x",), "m")
    before = meter.estimate(request, {}, "industrial")
    for key in "abc":
        meter.admit(key, 0.0)
        meter.settle(key, {"input_tokens": 0, "output_tokens": 10})
    after = meter.estimate(request, {}, "industrial")
    assert before == pytest.approx(90, rel=0.05) and after == pytest.approx(10, rel=0.2)


@pytest.fixture
def root(tmp_path):
    make_industry_subset(tmp_path, "toy", "widget", per_level=4, size=(640, 900))
    return tmp_path


def plans_for(root, provider, model, tmp_path):
    return build_plan(datasets.resolve(root, "toy"), identity=provider.identity(), model=model, refs=3,
                      prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out",
                      run_name="m")


def run(provider, plans, cache_dir, **kw):
    return run_engine(provider, plans, cache_dir, **kw)


@pytest.mark.parametrize("kind,model", [("openai", "gpt-4o"), ("anthropic", "claude-3-5-sonnet-latest")])
def test_estimate_matches_billed_input_tokens(kind, model, root, tmp_path):
    server = WireServer().start()
    try:
        provider = (OpenAIProvider(api_key="k", base_url=server.openai_url) if kind == "openai" else
                    AnthropicProvider(api_key="k", base_url=server.anthropic_url, prompt_caching=False))
        plans = plans_for(root, provider, model, tmp_path)
        counter = TokenCounter(kind, model)
        if kind == "anthropic":  # calibrated on the provider's count_tokens, as the CLI does
            async def count():
                probe = AnthropicProvider(api_key="k", base_url=server.anthropic_url)
                try:
                    return await probe.count_text_tokens(plans[0].jobs[0].request)
                finally:
                    await probe.aclose()
            counter.calibrate_text(plans[0].jobs[0].request, asyncio.run(count()))
        cache = ResponseCache(tmp_path / "cache")
        estimate = estimate_plans(plans, kind, model, load_prices().lookup(model), cache, counter=counter)
        cache.close()
        summary = run(provider, plans, tmp_path / "cache")
    finally:
        server.stop()
    assert summary.statuses == {"ok": 16}
    ratio = estimate.input_tokens / summary.usage["input_tokens"]
    assert 0.97 <= ratio <= 1.03, ratio
    cache = ResponseCache(tmp_path / "cache")
    again = estimate_plans(plans, kind, model, None, cache)  # everything answered now: nothing to pay
    cache.close()
    assert again.jobs == 0 and again.cached_jobs == 16 and again.input_tokens == 0


def test_anthropic_prefix_is_cached_and_cheaper(root, tmp_path):
    server = WireServer().start()
    try:
        provider = AnthropicProvider(api_key="k", base_url=server.anthropic_url)
        plans = plans_for(root, provider, "claude-3-5-sonnet-latest", tmp_path)
        summary = run(provider, plans, tmp_path / "cache", concurrency=1)
        blocks = server.requests[0].body["messages"][0]["content"]
    finally:
        server.stop()
    marked = [i for i, b in enumerate(blocks) if "cache_control" in b]
    assert marked == [6] and blocks[6]["type"] == "image"  # the third reference, the end of the fixed prefix
    assert summary.usage["cache_write_tokens"] > 0 and summary.usage["cached_input_tokens"] > 0
    price = load_prices().require("claude-3-5-sonnet")
    uncached = dict(summary.usage)
    uncached.pop("cached_input_tokens")
    uncached.pop("cache_write_tokens")
    assert price.cost(summary.usage) < 0.6 * price.cost(uncached)


def test_openai_prompt_cache_key_only_for_the_openai_api(root, tmp_path, monkeypatch):
    server = WireServer().start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)  # "the OpenAI API", served locally
        official = OpenAIProvider(api_key="k")
        run(official, plans_for(root, official, "gpt-4o", tmp_path), tmp_path / "c1", concurrency=1)
        keys = {r.body.get("prompt_cache_key") for r in server.requests}
        server.requests.clear()
        custom = OpenAIProvider(api_key="k", base_url=server.openai_url)
        summary = run(custom, plans_for(root, custom, "gpt-4o", tmp_path / "second"), tmp_path / "c2", concurrency=1)
    finally:
        server.stop()
    assert keys == {"mmad-toy-widget"}
    assert all("prompt_cache_key" not in r.body for r in server.requests)
    assert summary.usage["cached_input_tokens"] > 0  # a byte-identical prefix is cached automatically


def test_budget_stop_then_resume(root, tmp_path):
    server = WireServer().start()
    try:
        provider = AnthropicProvider(api_key="k", base_url=server.anthropic_url, prompt_caching=False)
        plans = plans_for(root, provider, "claude-3-5-sonnet-latest", tmp_path)
        price = load_prices().require("claude-3-5-sonnet")
        meter = CostMeter(price, TokenCounter("anthropic", "claude-3-5-sonnet"), max_cost=0.02)
        summary = run(provider, plans, tmp_path / "cache", meter=meter, concurrency=2)
        assert summary.budget_stop and 0 < summary.remaining < 16
        assert meter.spent <= 0.02
        paid = len(server.paid)
        provider = AnthropicProvider(api_key="k", base_url=server.anthropic_url, prompt_caching=False)
        summary = run(provider, plans, tmp_path / "cache")
        assert summary.remaining == 0 and len(server.paid) == paid + summary.statuses["ok"]
        assert summary.already_done == paid
    finally:
        server.stop()


def test_cli_estimate_and_max_cost_exit(root, tmp_path):
    server = WireServer().start()
    env = dict(os.environ, ANTHROPIC_API_KEY="k", MMAD_CACHE_DIR=str(tmp_path / "cache"), MMAD_DATA_ROOT=str(root))
    try:
        estimate = subprocess.run([sys.executable, "-m", "mmad.cli", "estimate", "--provider", "anthropic",
                                   "--dataset", "toy", "--base-url", server.anthropic_url], env=env,
                                  capture_output=True, text=True, timeout=60)
        assert estimate.returncode == 0, estimate.stderr
        for column in ("plain", "with caching", "batch", "both", "16 jobs to send"):
            assert column in estimate.stdout
        assert not server.paid  # only the free token count was asked
        assert {r.route for r in server.requests} == {"/v1/messages/count_tokens"}
        scored = subprocess.run([sys.executable, "-m", "mmad.cli", "score", "--provider", "anthropic", "--dataset",
                                 "toy", "--base-url", server.anthropic_url, "--max-cost", "0.01", "--out",
                                 str(tmp_path / "o"), "-q"], env=env, capture_output=True, text=True, timeout=60)
        assert scored.returncode == 5 and "--max-cost" in scored.stderr and "Traceback" not in scored.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("answer", ["html_404", "html_200", "message"])
def test_estimate_against_a_server_without_count_tokens_says_why_in_words(answer, root, tmp_path):
    """An Anthropic-compatible server without count_tokens: the estimate goes on with the character
    rule, and its note says why in one line (no exception name, no page)."""
    server = WireServer(count_tokens=answer).start()
    env = dict(os.environ, ANTHROPIC_API_KEY="k", MMAD_CACHE_DIR=str(tmp_path / "cache"), MMAD_DATA_ROOT=str(root))
    try:
        estimate = subprocess.run([sys.executable, "-m", "mmad.cli", "estimate", "--provider", "anthropic",
                                   "--dataset", "toy", "--base-url", server.anthropic_url], env=env,
                                  capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert estimate.returncode == 0, estimate.stderr
    notes = [line for line in estimate.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, estimate.stderr
    why = {"html_404": "HTTP 404 Not Found", "html_200": "it answered HTTP 200 with an HTML page, not the API's JSON",
           "message": "it answered without a token count"}[answer]
    assert notes[0] == (f"note: exact token counting not possible: the server at {server.anthropic_url} has no "
                        f"Anthropic count_tokens endpoint ({why}); text tokens estimated at ~3.5 characters per token")
    assert "Error" not in estimate.stderr and "<" not in estimate.stderr and "Traceback" not in estimate.stderr
    assert "16 jobs to send" in estimate.stdout


def test_estimate_with_nothing_listening_says_so_in_words(root, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    env = dict(os.environ, ANTHROPIC_API_KEY="k", MMAD_CACHE_DIR=str(tmp_path / "cache"), MMAD_DATA_ROOT=str(root))
    estimate = subprocess.run([sys.executable, "-m", "mmad.cli", "estimate", "--provider", "anthropic",
                               "--dataset", "toy", "--base-url", url], env=env, capture_output=True, text=True,
                              timeout=60)
    assert estimate.returncode == 0, estimate.stderr
    notes = [line for line in estimate.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: exact token counting not possible: cannot reach {url} (connection error: connection "
                     f"refused: nothing answers at that address and port); text tokens estimated at ~3.5 "
                     f"characters per token"], estimate.stderr
