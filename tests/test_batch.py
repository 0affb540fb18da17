"""Batch mode through the real SDKs against the local server's files/batches endpoints."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mmad.cache.store import ResponseCache
from mmad.config import PACKAGED_PROMPTS
from mmad.data import datasets
from mmad.engine.batch import BatchOptions
from mmad.engine.events import BatchSubmitted
from mmad.engine.jobs import build_plan
from mmad.engine.runner import Engine, EngineSettings
from mmad.providers.anthropic import AnthropicProvider
from mmad.providers.openai import OpenAIProvider
from mmad.results.files import JsonlLog, read_result_file
from tests.conftest import make_industry_subset, run_engine
from tests.wire_server import WireServer


@pytest.fixture
def root(tmp_path):
    make_industry_subset(tmp_path, "toy", "widget", per_level=5)  # 20 jobs
    return tmp_path


def provider_for(kind, server):
    if kind == "openai":
        return OpenAIProvider(api_key="k", base_url=server.openai_url)
    return AnthropicProvider(api_key="k", base_url=server.anthropic_url)


def plans_for(root, provider, tmp_path):
    return build_plan(datasets.resolve(root, "toy"), identity=provider.identity(), model="m", refs=3,
                      prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out",
                      run_name="m")


def run(provider, plans, tmp_path, events=None, **options):
    batch = BatchOptions(tmp_path / "out" / "batches.json", poll_interval=0.01, **options)
    return run_engine(provider, plans, tmp_path / "cache", events, batch=batch)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_batches_split_by_count_and_bytes_and_fill_results(kind, root, tmp_path):
    server = WireServer().start()
    server.batch_fail_ids = set()
    try:
        provider = provider_for(kind, server)
        plans = plans_for(root, provider, tmp_path)
        server.batch_fail_ids = {plans[0].jobs[3].key}
        events = []
        one_request = len(json.dumps(provider.batch_line("x" * 64, plans[0].jobs[0].request, {
            r.sha256: __import__("mmad.data.images", fromlist=["encode_file"]).encode_file(p)
            for r, p in zip(plans[0].jobs[0].request.image_refs, list(plans[0].references) + [plans[0].jobs[0].query])})))
        summary = run(provider, plans, tmp_path, events, max_requests=8, max_bytes=int(one_request * 5.5))
    finally:
        server.stop()
    sizes = [e.requests for e in events if isinstance(e, BatchSubmitted)]
    assert sum(sizes) == 20 and max(sizes) <= 5 and len(sizes) == 4  # bytes bound before count
    assert summary.statuses == {"ok": 19, "error": 1} and summary.remaining == 0
    assert summary.sources == {"batch": 20}
    table = read_result_file(plans[0].csv_path)
    assert sum(s == s for s in table.scores) == 19
    for received in server.requests:  # same layout as live requests: temperature 0, 4 images
        assert received.body["temperature"] == 0 and len(received.images()) == 4
    state = json.loads((tmp_path / "out" / "batches.json").read_text())
    assert all(b["done"] for b in state["batches"])


def test_answers_reach_the_cache_so_live_reruns_are_free(root, tmp_path):
    server = WireServer().start()
    try:
        provider = provider_for("anthropic", server)
        plans = plans_for(root, provider, tmp_path)
        run(provider, plans, tmp_path)
        paid = len(server.paid)
        provider = provider_for("anthropic", server)
        fresh = build_plan(datasets.resolve(root, "toy"), identity=provider.identity(), model="m", refs=3,
                           prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "live",
                           run_name="m")
        cache = ResponseCache(tmp_path / "cache")

        async def live():
            try:
                return await Engine(provider, cache, EngineSettings(), executor=ThreadPoolExecutor(2)).run(fresh)
            finally:
                await provider.aclose()
        summary = asyncio.run(live())
        cache.close()
    finally:
        server.stop()
    assert summary.sources == {"cache": 20} and len(server.paid) == paid == 20


def test_restart_resumes_polling_without_resubmitting(root, tmp_path):
    """A process killed while its batch is processing: the rerun polls the same batch id."""
    server = WireServer().start()
    server.batch_polls_until_done = 10**9  # never ends while the first process runs
    env = dict(os.environ, ANTHROPIC_API_KEY="k", MMAD_CACHE_DIR=str(tmp_path / "cache"), MMAD_DATA_ROOT=str(root))
    command = [sys.executable, "-m", "mmad.cli", "score", "--provider", "anthropic", "--model", "m", "--dataset",
               "toy", "--base-url", server.anthropic_url, "--out", str(tmp_path / "out"), "--batch",
               "--poll-interval", "0.05", "-q"]
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = tmp_path / "out" / "batches.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not state.exists():
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        submitted = json.loads(state.read_text())["batches"]
        assert len(submitted) == 1 and not submitted[0]["done"]
        assert len(server.batches) == 1
        server.batch_polls_until_done = 0
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        assert len(server.batches) == 1  # polled, not submitted again
        assert len(server.paid) == 20
        records = JsonlLog.read(tmp_path / "out" / "m_toy_widget.jsonl")
        assert len(records) == 20 and {r["source"] for r in records} == {"batch"}
    finally:
        server.stop()


def test_identical_images_share_one_batch_request(root, tmp_path):
    import shutil
    test_root = root / "Industry/toy/widget/test"
    shutil.copy(test_root / "defect_level_1/000.png", test_root / "defect_level_1/001.png")
    server = WireServer().start()
    try:
        provider = provider_for("openai", server)
        plans = plans_for(root, provider, tmp_path)
        summary = run(provider, plans, tmp_path)
    finally:
        server.stop()
    assert len(server.paid) == 19  # custom_ids are unique within a batch
    assert summary.statuses == {"ok": 20} and summary.sources == {"batch": 19, "cache": 1}
