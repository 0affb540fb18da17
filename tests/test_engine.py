"""The engine through the real SDKs against the local wire-format server."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from mmad.cache.store import ResponseCache
from mmad.config import PACKAGED_PROMPTS
from mmad.data import datasets
from mmad.engine.events import Paused
from mmad.engine.jobs import build_plan
from mmad.engine.ratecontrol import HEADROOM
from mmad.engine.runner import Engine, EngineSettings
from mmad.providers.anthropic import AnthropicProvider
from mmad.providers.base import ProviderFailure
from mmad.providers.openai import OpenAIProvider
from mmad.results.files import JsonlLog, read_result_file
from tests.conftest import make_industry_subset, run_engine, write_image
from tests.wire_server import Fault, WireServer, decode_image

KEY = "sk-test-SECRET-0123456789"


@pytest.fixture
def root(tmp_path):
    make_industry_subset(tmp_path, "toy", "widget", per_level=3)
    # one tall query image: must arrive downscaled to 512 px height
    write_image(tmp_path / "Industry/toy/widget/test/good_level_0/000.png", seed=9, size=(300, 900))
    return tmp_path


def sent(server):
    return list(server.requests)


def sent_paid(server):
    return list(server.paid)


def provider_for(kind, server, **kw):
    if kind == "openai":
        return OpenAIProvider(api_key=KEY, base_url=server.openai_url, **kw)
    return AnthropicProvider(api_key=KEY, base_url=server.anthropic_url, **kw)


def plan_for(root, provider, tmp_path, *, refs=3, prompt=None, model="test-model", temperature=0.0):
    subsets = datasets.resolve(root, "toy", "widget")
    return build_plan(subsets, identity=provider.identity(), model=model, refs=refs, prompt_choice=prompt,
                      prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out", run_name="m",
                      temperature=temperature)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_request_layout_as_received(kind, server, root, tmp_path):
    provider = provider_for(kind, server)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache")
    assert summary.statuses == {"ok": 12} and summary.remaining == 0
    jobs = sent(server)
    assert len(jobs) == 12 and all(len(r.images()) == 4 for r in jobs)
    refs = {tuple(r.images()[:3]) for r in jobs}
    assert len(refs) == 1  # the same three references in every job
    queries = {r.images()[3] for r in jobs}
    assert len(queries) == 12
    for received in jobs:
        body = received.body
        assert "temperature" in body and body["temperature"] == 0
        assert body["max_tokens"] == 300
        texts = received.texts()
        assert texts[1:] == ["Normal Image 1:", "Normal Image 2:", "Normal Image 3:", "Inference Image :"]
        assert "non-defect category of widget" in texts[0]
        system = body["system"] if kind == "anthropic" else body["messages"][0]["content"]
        assert system.startswith("You are a helpful assistant that responds in detecting anomalies")
        for data in received.images():
            assert decode_image(data).format == "PNG"
    heights = sorted(decode_image(r.images()[3]).size for r in jobs)
    assert (170, 512) in heights  # 300x900 -> height 512, width int(300 * 512 / 900) = 170 (truncated)
    auth = [r.headers.get("x-api-key") or r.headers.get("authorization") for r in jobs]
    assert all(KEY in a for a in auth)


def test_results_files_and_eval(server, root, tmp_path):
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    run_engine(provider, plans, tmp_path / "cache")
    table = read_result_file(plans[0].csv_path)
    assert (table.dataset, table.subset) == ("toy", "widget")  # from the JSONL beside the CSV
    assert len(table.paths) == 12 and not any(s != s for s in table.scores)
    records = JsonlLog.read(plans[0].jsonl_path)
    assert {r["status"] for r in records} == {"ok"} and all(r["source"] == "live" for r in records)
    assert set(records[0]) >= {"path", "severity", "score", "status", "reason", "raw", "usage", "latency_s",
                               "attempts", "source"}


def test_faults_end_in_definite_statuses(server, root, tmp_path):
    server.faults.extend([Fault("ok"), Fault("429", retry_after_ms=100), Fault("500"), Fault("529"),
                          Fault("malformed"), Fault("html"), Fault("garbage"), Fault("refusal"),
                          Fault("bad_request", message="image too large")])
    provider = provider_for("anthropic", server)
    plans = plan_for(root, provider, tmp_path)
    events = []
    summary = run_engine(provider, plans, tmp_path / "cache", events, concurrency=1)
    assert summary.remaining == 0
    assert summary.statuses["ok"] == 9
    assert summary.statuses["parse_failed"] == 1 and summary.statuses["refused"] == 1
    assert summary.statuses["error"] == 1
    assert summary.failures["rate_limit"] >= 1 and summary.failures["transient"] >= 3
    assert summary.failures["protocol"] == 1  # an HTML page mid-run is retried, never a traceback
    assert any(isinstance(e, Paused) for e in events)
    records = {r["status"]: r for r in JsonlLog.read(plans[0].jsonl_path)}
    assert records["parse_failed"]["score"] is None and records["parse_failed"]["raw"] == "I think it looks fine."
    assert records["refused"]["score"] is None
    assert "image too large" in records["error"]["error"]
    table = read_result_file(plans[0].csv_path)
    assert sum(s != s for s in table.scores) == 3  # failures are empty, never 0


def test_hang_times_out_and_is_retried(server, root, tmp_path):
    server.faults.append(Fault("hang", seconds=5))
    provider = provider_for("anthropic", server, timeout=2.0)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache")
    assert summary.statuses == {"ok": 12} and summary.failures["transient"] == 1


def test_retries_exhausted_is_error_not_zero(server, root, tmp_path):
    # the first job succeeds; the second fails on every one of its 3 attempts
    server.fault_rule = lambda received, n: Fault("500") if 3 <= n <= 5 else None
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache", max_attempts=3, concurrency=1)
    assert summary.statuses == {"ok": 11, "error": 1} and summary.failed == 1
    assert summary.causes == {"server error (HTTP 500)": 1}
    table = read_result_file(plans[0].csv_path)
    assert sum(s != s for s in table.scores) == 1  # empty, never 0


def test_a_server_that_always_fails_stops_after_the_first_request(server, root, tmp_path):
    server.fault_rule = lambda received, n: Fault("500")
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache", max_attempts=3)
    assert summary.fatal is not None and server.openai_url in str(summary.fatal)
    assert len(sent(server)) == 3 and summary.remaining == 12 and not summary.statuses  # no job recorded


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", ["html_501", "html_405"])
def test_a_url_that_takes_no_post_is_never_retried(kind, fault, server, root, tmp_path):
    """501/405 (a web server, not an API) stop the run at once, later in a run too, like a 404."""
    server.fault_rule = lambda received, n: Fault(fault) if n >= 4 else None
    provider = provider_for(kind, server)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache", max_attempts=3, concurrency=1)
    assert summary.fatal is not None and not summary.fatal.retryable
    assert f"HTTP {fault[-3:]}" in str(summary.fatal) and "not an API endpoint" in str(summary.fatal)
    assert len(sent(server)) == 4 and summary.statuses == {"ok": 3}  # the 4th job stays to do


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("fault,status", [("html_404", 404), ("html_501", 501), ("html_405", 405), ("html", None),
                                          ("500", 500)])
def test_failure_messages_are_one_line_without_the_page(kind, fault, status, server, root, tmp_path):
    server.fault_rule = lambda received, n: Fault(fault, message="line one\nline two")
    provider = provider_for(kind, server)
    job = plan_for(root, provider, tmp_path)[0].jobs[0]
    request = job.request.__class__(system="s", parts=("hello",), model="m")

    async def go():
        try:
            await provider.complete(request, {})
        finally:
            await provider.aclose()
    with pytest.raises(ProviderFailure) as caught:
        asyncio.run(go())
    text = str(caught.value)
    assert caught.value.status == status and "\n" not in text and "<" not in text and "line one" not in text
    assert "not the API's JSON" in text or fault == "500"
    assert len(text) < 400


def test_breaker_stops_a_run_whose_server_goes_down(server, root, tmp_path):
    make_industry_subset(root, "toy", "widget", per_level=10)  # 40 jobs
    server.fault_rule = lambda received, n: Fault("500") if n > 3 else None
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache", max_attempts=2, concurrency=1, breaker_threshold=5)
    # requests, not jobs: jobs 4 and 5 fail both attempts, the first attempt of job 6 is the 5th failure
    assert summary.statuses == {"ok": 3, "error": 2} and summary.fatal is not None
    assert "the last 5 requests failed (server error (HTTP 500) x5)" in str(summary.fatal)
    assert len(sent(server)) == 3 + 5 and summary.remaining == 35  # job 6 stays to-do


def test_shared_slowdown_on_429(server, root, tmp_path):
    """One 429 with retry-after pauses every worker, not just the one that got it."""
    server.faults.append(Fault("429", retry_after_ms=400))
    server.latency = 0.02
    provider = provider_for("anthropic", server)
    plans = plan_for(root, provider, tmp_path)
    import time
    start = time.monotonic()
    summary = run_engine(provider, plans, tmp_path / "cache", concurrency=4)
    assert summary.statuses == {"ok": 12}
    assert time.monotonic() - start >= 0.4
    assert len(sent(server)) == 13


def test_quota_stops_cleanly_and_resumes(server, root, tmp_path):
    server.fault_rule = lambda received, n: Fault("quota") if n == 7 else None
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache", concurrency=1)
    assert summary.fatal is not None and summary.fatal.kind == "quota"
    assert 0 < summary.remaining < 12
    paid_before = {r.query_id() for r in sent_paid(server)}
    server.fault_rule = None
    server.paid.clear()
    provider = provider_for("openai", server)
    summary = run_engine(provider, plans, tmp_path / "cache")
    assert summary.remaining == 0 and summary.already_done == len(paid_before)
    assert not paid_before & {r.query_id() for r in sent_paid(server)}  # nothing paid twice


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_bad_key_is_fatal_and_secret_free(kind, root, tmp_path):
    server = WireServer(valid_keys={"the-right-key"}).start()
    try:
        provider = provider_for(kind, server)
        plans = plan_for(root, provider, tmp_path)
        summary = run_engine(provider, plans, tmp_path / "cache")
    finally:
        server.stop()
    assert summary.fatal.kind == "auth" and summary.remaining == 12
    assert KEY not in str(summary.fatal) and "SECRET" not in str(summary.fatal)


def test_cache_hit_needs_no_image_work_and_no_request(server, root, tmp_path, monkeypatch):
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    run_engine(provider, plans, tmp_path / "cache")
    before = len(server.requests)
    import mmad.engine.preparation
    monkeypatch.setattr(mmad.engine.preparation, "encode_file", lambda *a, **k: pytest.fail("encoded an image on a cache hit"))
    provider = provider_for("openai", server)
    fresh = plan_for(root, provider, tmp_path / "second")
    summary = run_engine(provider, fresh, tmp_path / "cache")
    assert summary.sources == {"cache": 12} and len(server.requests) == before
    assert read_result_file(fresh[0].csv_path).scores.tolist() == read_result_file(plans[0].csv_path).scores.tolist()


def test_cache_key_components(server, root, tmp_path):
    provider = provider_for("openai", server)
    base = {j.path: j.key for j in plan_for(root, provider, tmp_path)[0].jobs}
    other_key = OpenAIProvider(api_key="sk-other-key-999999", base_url=server.openai_url)
    assert {j.path: j.key for j in plan_for(root, other_key, tmp_path)[0].jobs} == base  # keys never in the key
    for variant in (dict(model="other"), dict(temperature=0.5), dict(prompt="industrial-paper")):
        keys = {j.path: j.key for j in plan_for(root, provider, tmp_path, **variant)[0].jobs}
        assert not set(keys.values()) & set(base.values()), variant
    # the same bytes at another path is the same image; changed bytes are not
    query = root / "Industry/toy/widget/test/defect_level_1/000.png"
    write_image(query, seed=12345)
    changed = {j.path: j.key for j in plan_for(root, provider, tmp_path)[0].jobs}
    assert changed["defect_level_1/000.png"] != base["defect_level_1/000.png"]
    assert sum(changed[p] != base[p] for p in base) == 1


def test_key_template_gives_the_same_keys_as_cache_key(server, root, tmp_path):
    from mmad.cache.store import cache_key
    provider = provider_for("openai", server)
    for job in plan_for(root, provider, tmp_path)[0].jobs:
        assert job.key == cache_key(provider.identity(), job.request)


def test_a_missing_query_is_one_line_before_any_work(root, tmp_path):
    from mmad.errors import DataError
    (root / "Industry/toy/widget/test/defect_level_2/001.png").unlink()
    with pytest.raises(DataError, match=r"1 missing image\(s\) at line\(s\) 9 "):
        plan_for(root, OpenAIProvider(api_key=KEY, base_url="http://127.0.0.1:9/v1"), tmp_path)


def test_refusals_are_not_cached_and_retry_failed_resends(server, root, tmp_path):
    server.faults.extend([Fault("refusal"), Fault("garbage")])
    provider = provider_for("anthropic", server)
    plans = plan_for(root, provider, tmp_path)
    run_engine(provider, plans, tmp_path / "cache", concurrency=1)
    before = len(server.requests)
    before_jobs = len(sent(server))
    summary = run_engine(provider_for("anthropic", server), plans, tmp_path / "cache")
    assert summary.already_done == 12 and len(server.requests) == before  # plain rerun: nothing to do
    summary = run_engine(provider_for("anthropic", server), plans, tmp_path / "cache", retry_failed=True)
    # the refusal is sent again (live); the parse failure was paid for and comes from the cache
    assert len(sent(server)) == before_jobs + 1
    assert summary.sources == {"live": 1, "cache": 1}


def test_no_secret_in_cache_or_results(server, root, tmp_path):
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    run_engine(provider, plans, tmp_path / "cache")
    for path in list((tmp_path / "cache").rglob("*")) + list((tmp_path / "out").rglob("*")):
        if path.is_file():
            assert b"SECRET" not in path.read_bytes(), path


def test_a_single_image_server_stops_the_run_at_its_first_request(root, tmp_path):
    """No probe request (it would be billed): the first job's own rejection says what to do."""
    server = WireServer(max_images=1).start()
    try:
        provider = provider_for("openai", server)
        plans = plan_for(root, provider, tmp_path)
        summary = run_engine(provider, plans, tmp_path / "cache")
        assert summary.fatal is not None and summary.fatal.kind == "bad_request"
        assert "may not take 4 images in one message" in str(summary.fatal)
        assert "--limit-mm-per-prompt" in str(summary.fatal) and "At most 1 image(s)" in str(summary.fatal)
        assert len(server.requests) == 1  # the first job itself, not a probe; nothing more was sent
        assert JsonlLog.read(plans[0].jsonl_path) == []  # the job stays to-do
        provider = provider_for("openai", server)
        zero_shot = plan_for(root, provider, tmp_path, refs=0)
        summary = run_engine(provider, zero_shot, tmp_path / "cache")
        assert summary.statuses == {"ok": 12}
    finally:
        server.stop()


def test_learns_limits_from_headers(server, root, tmp_path):
    server.limit_headers = {"requests": 120, "tokens": 500000}
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    cache = ResponseCache(tmp_path / "cache")

    async def go():
        engine = Engine(provider, cache, EngineSettings(requests_per_minute=6000), executor=ThreadPoolExecutor(2))
        await engine.run(plans)
        await provider.aclose()
        return engine
    engine = asyncio.run(go())
    cache.close()
    control = engine.control("test-model")
    assert control.learned_rpm == 120 and control.learned_tpm == 500000
    assert control.requests_per_minute() == pytest.approx(120 * HEADROOM)  # paced a little under the limit


def test_unreadable_query_image_is_a_job_error(server, root, tmp_path):
    provider = provider_for("openai", server)
    plans = plan_for(root, provider, tmp_path)
    (root / "Industry/toy/widget/test/defect_level_2/001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    summary = run_engine(provider, plans, tmp_path / "cache")
    assert summary.statuses == {"ok": 11, "error": 1}


def test_identical_images_are_paid_once(server, root, tmp_path):
    """Two template rows whose images have the same bytes are one request, even when concurrent."""
    import shutil
    test_root = root / "Industry/toy/widget/test"
    shutil.copy(test_root / "defect_level_1/000.png", test_root / "defect_level_1/001.png")
    server.latency = 0.2
    provider = provider_for("anthropic", server)
    plans = plan_for(root, provider, tmp_path)
    summary = run_engine(provider, plans, tmp_path / "cache", concurrency=8)
    assert summary.statuses == {"ok": 12} and summary.sources == {"live": 11, "cache": 1}
    assert len(sent(server)) == 11
