"""Cost figures against the local wire-format server (which bills with the vendors' formulas).

1. estimated / billed input tokens on a subset, per provider (target 1.00 +/- 0.03);
2. billed input cost with prefix caching / without, Anthropic (target <= 0.35).

    python benchmarks/bench_cost.py [--jobs 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmad.cache.store import ResponseCache  # noqa: E402
from mmad.config import PACKAGED_PROMPTS  # noqa: E402
from mmad.cost.estimate import TokenCounter, estimate_plans, load_prices  # noqa: E402
from mmad.data import datasets  # noqa: E402
from mmad.data.templates import write_result_csv  # noqa: E402
from mmad.engine.jobs import build_plan  # noqa: E402
from mmad.providers.anthropic import AnthropicProvider  # noqa: E402
from mmad.providers.openai import OpenAIProvider  # noqa: E402
from tests.conftest import run_engine  # noqa: E402
from tests.wire_server import WireServer  # noqa: E402


def make_dataset(root: Path, jobs: int) -> None:
    """Photo-sized images (1024 x 768 -> sent at 683 x 512), an MVTec-like subset."""
    from skimage import data
    rng = np.random.default_rng(0)
    base = Image.fromarray(data.astronaut()).resize((1024, 768))
    folder = root / "Industry" / "bench" / "photos"
    (folder / "train" / "good").mkdir(parents=True)
    for i in range(3):
        base.rotate(i * 3).save(folder / "train" / "good" / f"{i}.png")
    rows = []
    for i in range(jobs):
        rel = f"level_{i % 4}/{i:04d}.png"
        (folder / "test" / f"level_{i % 4}").mkdir(parents=True, exist_ok=True)
        noisy = np.clip(np.asarray(base, np.int16) + rng.integers(-20, 20, (768, 1024, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / "test" / rel, compress_level=1)
        rows.append((rel, float(i % 4), None))
    write_result_csv(root / "template" / "bench_photos_template.csv", rows)


def plans(root: Path, provider, model: str, out: Path):
    return build_plan(datasets.resolve(root, "bench"), identity=provider.identity(), model=model, refs=3,
                      prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=out, run_name="b")


def score(provider, job_plans, cache_dir: Path):
    """One sequential run (so every request after the first can read the prefix cache)."""
    return run_engine(provider, job_plans, cache_dir, concurrency=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=60)
    args = parser.parse_args()
    prices = load_prices()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp, args.jobs)
        server = WireServer().start()
        try:
            print(f"[estimate vs billed] {args.jobs} jobs, 1024x768 photos, 3 references, prompt caching off")
            for kind, model in (("openai", "gpt-4o"), ("anthropic", "claude-3-5-sonnet-latest")):
                provider = (OpenAIProvider(api_key="b", base_url=server.openai_url, prompt_caching=False)
                            if kind == "openai" else
                            AnthropicProvider(api_key="b", base_url=server.anthropic_url, prompt_caching=False))
                job_plans = plans(tmp, provider, model, tmp / f"out-{kind}")
                counter = TokenCounter(kind, model)
                if kind == "anthropic":
                    probe = AnthropicProvider(api_key="b", base_url=server.anthropic_url)

                    async def count():
                        try:
                            return await probe.count_text_tokens(job_plans[0].jobs[0].request)
                        finally:
                            await probe.aclose()
                    counter.calibrate_text(job_plans[0].jobs[0].request, asyncio.run(count()))
                cache = ResponseCache(tmp / f"cache-{kind}")
                estimate = estimate_plans(job_plans, kind, model, prices.lookup(model), cache, counter=counter)
                cache.close()
                summary = score(provider, job_plans, tmp / f"cache-{kind}")
                billed = summary.usage["input_tokens"]
                print(f"  {kind:9s} {model}: estimated {estimate.input_tokens:,} / billed {billed:,} input tokens = "
                      f"{estimate.input_tokens / billed:.3f} (target 1.00 +/- 0.03)")
            print("[prefix caching] anthropic claude-3-5-sonnet, one subset run sequentially")
            price = prices.require("claude-3-5-sonnet")
            costs = {}
            for caching in (False, True):
                provider = AnthropicProvider(api_key="b", base_url=server.anthropic_url, prompt_caching=caching)
                summary = score(provider, plans(tmp, provider, "claude-3-5-sonnet-latest", tmp / f"out-c{caching}"),
                                tmp / f"cache-c{caching}")
                usage = {k: v for k, v in summary.usage.items() if k != "output_tokens"}
                costs[caching] = price.cost(usage)
                print(f"  caching {'on ' if caching else 'off'}: billed input ${costs[caching]:.4f} "
                      f"({dict(usage)})")
            print(f"  with / without = {costs[True] / costs[False]:.3f} (target <= 0.35)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
