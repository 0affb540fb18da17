"""Under pressure: rate limits without storms, budgets that spend, inputs checked before work,
fast reruns, and the SDK fast path that sends what the SDK would."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from mmad import cli
from mmad.config import PACKAGED_PROMPTS
from mmad.cost.estimate import CostMeter, TokenCounter, load_prices
from mmad.data import datasets
from mmad.data.filememo import FileMemo
from mmad.engine.jobs import build_plan
from mmad.providers.anthropic import AnthropicProvider
from mmad.providers.openai import OpenAIProvider, dumps
from mmad.results.files import JsonlLog
from tests.conftest import FakeClock, make_industry_subset, run_engine, write_image
from tests.wire_server import Fault


@pytest.fixture
def root(tmp_path):
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=5)  # 20 jobs
    return tmp_path / "data"


def plans_for(root, provider, tmp_path, model="m", **kw):
    return build_plan(datasets.resolve(root, "toy", "widget"), identity=provider.identity(), model=model, refs=3,
                      prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out", run_name="m", **kw)


def sent(server):
    return [r for r in server.requests if r.body.get("max_tokens") == 300]


# --------------------------------------------------------------------------- rate limits

def test_rate_limits_do_not_spend_attempts(server, root, tmp_path):
    server.fault_rule = lambda received, n: Fault("429", retry_after_ms=10) if 2 <= n <= 9 else None
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    summary = run_engine(provider, plans_for(root, provider, tmp_path), tmp_path / "cache", max_attempts=1,
                         concurrency=1)
    assert summary.statuses == {"ok": 20} and summary.failures["rate_limit"] == 8  # one attempt each, 429s free


def test_rate_limits_are_bounded_by_time_and_slow_the_client(server, root, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from mmad.cache.store import ResponseCache
    from mmad.engine.runner import Engine, EngineSettings
    server.fault_rule = lambda received, n: Fault("429", retry_after_ms=20) if 2 <= n <= 30 else None
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    plans = plans_for(root, provider, tmp_path)
    clock = FakeClock()
    cache = ResponseCache(tmp_path / "cache")

    async def go():
        engine = Engine(provider, cache, EngineSettings(concurrency=1, rate_limit_timeout=2.0,
                                                        requests_per_minute=600), clock=clock,
                        sleep=clock.sleep, executor=ThreadPoolExecutor(2))
        try:
            return await engine.run(plans), engine
        finally:
            await provider.aclose()
    summary, engine = asyncio.run(go())
    cache.close()
    records = JsonlLog.read(tmp_path / "out" / "m_toy_widget.jsonl")
    failed = [r for r in records if r["status"] == "error"]
    assert failed and all("still rate limited after 2 s" in r["error"] for r in failed)
    assert summary.statuses["ok"] + len(failed) == 20 and summary.failures["rate_limit"] == 29
    assert engine.control("m").factor < 0.5  # endless 429s lowered the rate


def test_paced_run_against_an_enforcing_server_draws_no_429(server, root, tmp_path):
    server.limit_headers = {"requests": 600}
    server.enforce_rpm = 600  # a rolling 60-s window
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    summary = run_engine(provider, plans_for(root, provider, tmp_path), tmp_path / "cache", requests_per_minute=600)
    assert summary.statuses == {"ok": 20} and summary.failures["rate_limit"] == 0


# --------------------------------------------------------------------------- budget

def priced_run(server, root, tmp_path, name, max_cost=None, concurrency=4, caching=False):
    provider = AnthropicProvider(api_key="k", base_url=server.anthropic_url, prompt_caching=caching)
    model = "claude-3-5-sonnet-latest"
    price = load_prices().require(model)
    meter = CostMeter(price, TokenCounter("anthropic", model), max_cost=max_cost, provider="anthropic",
                      caching=caching)
    plans = build_plan(datasets.resolve(root, "toy", "widget"), identity=provider.identity(), model=model, refs=3,
                       prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / name, run_name="m")
    summary = run_engine(provider, plans, tmp_path / f"cache-{name}", meter=meter, concurrency=concurrency)
    return summary, meter


def test_a_budget_of_k_requests_sends_about_k_and_never_passes_it(server, root, tmp_path):
    full, meter = priced_run(server, root, tmp_path, "full")
    per_request = meter.spent / 20
    for k in (8, 14):
        budget = k * per_request * 1.0001
        summary, meter = priced_run(server, root, tmp_path, f"k{k}", max_cost=budget)
        sent_now = summary.statuses["ok"]
        assert meter.spent <= budget  # never more than the budget
        assert k - 1 <= sent_now <= k  # at most one worst case short
        assert summary.budget_stop and summary.remaining == 20 - sent_now


def test_a_zero_budget_against_a_custom_server_sends_nothing(server, root, tmp_path, capsys, monkeypatch):
    """Every request a run sends is inside the budget: no unbudgeted probe of a custom server."""
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    code = cli.main(["score", "--provider", "openai", "--model", "gpt-4o", "--base-url", server.openai_url,
                     "--root", str(root), "--dataset", "toy", "--out", str(tmp_path / "o"), "--cache-dir",
                     str(tmp_path / "c"), "--max-cost", "0.003", "-q"])
    err = capsys.readouterr().err
    assert code == 5 and "--max-cost $0.003 " in err and not server.requests


def test_estimates_know_the_prompt_caching_each_request_gets(server, root, tmp_path):
    make_industry_subset(root, "toy", "widget", per_level=5, size=(900, 900))  # prefix above 1,024 tokens
    summary, meter = priced_run(server, root, tmp_path, "cached", caching=True, concurrency=1)
    assert summary.usage["cached_input_tokens"] > 0
    assert 0.85 <= summary.spent / summary.estimated <= 1.15  # actual vs expected, caching included


# --------------------------------------------------------------------------- broken images

def test_data_check_decodes_every_image(root, capsys):
    (root / "Industry/toy/widget/test/defect_level_1/000.png").write_bytes(
        (root / "Industry/toy/widget/test/defect_level_1/001.png").read_bytes()[:200])  # truncated
    (root / "Industry/toy/widget/train/good/000.png").write_bytes(b"")  # a zero-byte reference
    code = cli.main(["data", "check", "--root", str(root), "--dataset", "toy"])
    captured = capsys.readouterr()
    assert code == 2 and "2 image(s) cannot be decoded" in captured.err
    assert "defect_level_1/000.png" in captured.err and "train/good/000.png" in captured.err
    assert "images/s" in captured.out


def test_broken_reference_is_one_line_before_any_work(server, root, tmp_path):
    (root / "Industry/toy/widget/train/good/001.png").write_bytes(b"")
    env = dict(os.environ, OPENAI_API_KEY="k", MMAD_CACHE_DIR=str(tmp_path / "cache"), MMAD_DATA_ROOT=str(root))
    result = subprocess.run([sys.executable, "-m", "mmad.cli", "score", "--provider", "openai", "--model", "m",
                             "--base-url", server.openai_url, "--dataset", "toy", "--out", str(tmp_path / "o")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "reference image" in result.stderr and "001.png" in result.stderr
    assert "Traceback" not in result.stderr and not server.requests


def test_broken_query_is_that_jobs_error(server, root, tmp_path):
    (root / "Industry/toy/widget/test/defect_level_2/001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    plans = plans_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache")
    assert summary.statuses == {"ok": 19, "error": 1} and summary.causes == {"image: cannot be decoded": 1}
    [failed] = [r for r in JsonlLog.read(plans[0].jsonl_path) if r["status"] == "error"]
    assert "test/defect_level_2/001.png" in failed["error"] and "train" not in failed["error"]  # the query
    assert failed["source"] == "not sent" and summary.sources == {"live": 19, "not sent": 1}
    assert summary.examples == {"image: cannot be decoded": "defect_level_2/001.png"}


def test_detector_records_an_undecodable_query_and_exits_6(root, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="conventional detectors need torch")
    import mmad_conventional.run as run
    from mmad_conventional.backbone import efficientnet_lite0
    monkeypatch.setattr(run, "make_backbone", lambda name, weights: efficientnet_lite0(pretrained=False))
    (root / "Industry/toy/widget/test/defect_level_3/000.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "pc"
    code = cli.main(["score", "--provider", "patchcore", "--root", str(root), "--dataset", "toy", "--out", str(out),
                     "--image-size", "32", "--device", "cpu", "-q"])
    captured = capsys.readouterr()
    assert code == 6 and "1 test image(s) could not be decoded" in captured.err and "Traceback" not in captured.err
    records = JsonlLog.read(out / "patchcore-3shot_toy_widget.jsonl")
    assert [r["status"] for r in records].count("error") == 1
    assert cli.main(["score", "--provider", "patchcore", "--root", str(root), "--dataset", "toy", "--out", str(out),
                     "--image-size", "32", "--device", "cpu", "-q"]) == 6  # resumed: skipped, still reported
    assert "already scored" not in capsys.readouterr().err  # -q


# --------------------------------------------------------------------------- numbers and frictions

@pytest.mark.parametrize("args", [
    ["score", "--provider", "openai", "--dataset", "toy", "--rpm", "0"],
    ["score", "--provider", "openai", "--dataset", "toy", "--concurrency", "0"],
    ["score", "--provider", "openai", "--dataset", "toy", "--max-attempts", "0"],
    ["score", "--provider", "openai", "--dataset", "toy", "--tpm", "-10"],
    ["score", "--provider", "openai", "--dataset", "toy", "--temperature", "-5"],
    ["score", "--provider", "openai", "--dataset", "toy", "--max-cost", "-1"],
    ["score", "--provider", "openai", "--dataset", "toy", "--refs", "-1"],
    ["score", "--provider", "patchcore", "--dataset", "toy", "--image-size", "0"],
    ["score", "--provider", "patchcore", "--dataset", "toy", "--coreset-ratio", "2"],
    ["baseline", "rd", "--dataset", "toy", "--epochs", "0"],
    ["eval", "x", "--normal-up-to", "-1"],
    ["eval", "x", "--bootstrap", "-5"],
    ["data", "synth", "--per-level", "0"],
])
def test_bad_numbers_are_one_line_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "error: argument" in err


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("--timeout TIMEOUT seconds for a whole answer (a deadline per attempt, not per read) (default: "
                     "120.0)", "--max-attempts", "(default: 6)",
                     "(default: 300)", "(default: 900.0)"):
        assert fragment in text


def test_frictions(root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert cli.main(["score", "--provider", "anthropic", "--root", str(root), "--dataset", "toy"]) == 2
    assert "set ANTHROPIC_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert cli.main(["score", "--provider", "openai", "--root", str(root), "--dataset", "toy", "--dry-run",
                     "--prompts-dir", str(tmp_path / "nowhere")]) == 2
    assert "prompt folder" in capsys.readouterr().err
    assert cli.main(["data", "fetch", "--source", str(tmp_path / "missing"), "--root", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    mine = tmp_path / "zero.toml"
    mine.write_text('family = "industrial"\nrefs = 0\nsystem = "s"\ninstruction = "Rate $subject"\n')
    assert cli.main(["score", "--provider", "openai", "--root", str(root), "--dataset", "toy", "--dry-run",
                     "--prompt", str(mine), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "m+zero" not in out and "gpt-4o+zero+refs0" in out  # the prompt file's refs is the default
    with pytest.raises(SystemExit):
        cli.main(["estimate", "--help"])
    provider_help = capsys.readouterr().out.split("--provider {openai,anthropic}")[2].split("--dataset")[0]
    assert "detector" not in provider_help


# --------------------------------------------------------------------------- fast reruns

def test_file_memo_hashes_once_and_notices_changes(root, tmp_path, monkeypatch):
    provider = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1")
    first = plans_for(root, provider, tmp_path, memo=FileMemo(tmp_path / "cache"))
    import mmad.data.filememo
    calls = []
    real = mmad.data.filememo.sha256_file
    monkeypatch.setattr(mmad.data.filememo, "sha256_file", lambda path: calls.append(path) or real(path))
    again = plans_for(root, provider, tmp_path, memo=FileMemo(tmp_path / "cache"))
    assert calls == [] and [j.key for j in again[0].jobs] == [j.key for j in first[0].jobs]
    changed = root / "Industry/toy/widget/test/defect_level_1/000.png"
    write_image(changed, seed=777)
    os.utime(changed, ns=(1, 1))  # a different mtime
    third = plans_for(root, provider, tmp_path, memo=FileMemo(tmp_path / "cache"))
    assert calls == [changed.resolve()] or [str(c) for c in calls] == [str(changed.resolve())]
    assert sum(a.key != b.key for a, b in zip(first[0].jobs, third[0].jobs)) == 1


# --------------------------------------------------------------------------- the SDK fast path

def test_prebuilt_bodies_arrive_as_the_sdks_own_create_sends_them(server, root, tmp_path):
    """The engine posts JSON it built itself; the real SDK's `create` must produce the same body."""
    from mmad.data.images import encode_file
    openai_provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    anthropic_provider = AnthropicProvider(api_key="k", base_url=server.anthropic_url)
    job = plans_for(root, openai_provider, tmp_path)[0].jobs[0]
    images = {image.ref.sha256: encode_file(image.path, image.spec) for image in job.images}

    async def both():
        openai_body = openai_provider.body(job.request, images)
        await openai_provider.post_body(dumps(openai_body))
        await openai_provider._client.chat.completions.create(**openai_body)
        body = anthropic_provider.body(job.request, images)
        await anthropic_provider.post_body(dumps(body))
        await anthropic_provider._client.messages.create(
            model=body["model"], max_tokens=body["max_tokens"], system=body["system"], messages=body["messages"],
            extra_body={"temperature": body["temperature"]})
        await openai_provider.aclose()
        await anthropic_provider.aclose()
    asyncio.run(both())
    ours_openai, sdk_openai, ours_anthropic, sdk_anthropic = server.requests
    assert ours_openai.body == sdk_openai.body and ours_anthropic.body == sdk_anthropic.body
    assert json.dumps(ours_openai.body, sort_keys=True) == json.dumps(sdk_openai.body, sort_keys=True)
    for ours, sdk in ((ours_openai, sdk_openai), (ours_anthropic, sdk_anthropic)):
        for header in ("authorization", "x-api-key", "anthropic-version", "content-type"):
            assert ours.headers.get(header) == sdk.headers.get(header), header
