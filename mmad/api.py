"""The Python API: what people script, in four calls. The command line is built on the same
library functions, so a script and a command with the same settings give the same numbers.

    import mmad
    tables = mmad.load_results("results/gpt-4o")             # {run label: [ResultTable, ...]}
    records = mmad.evaluate("results/gpt-4o", "results/patchcore-3shot")
    means = mmad.dataset_means(records)                        # Table 3: per dataset and run
    report = mmad.compare("results/gpt-4o", "results/gpt-4o+industrial-paper")
    print(*report.comparisons[0].verdicts, sep="\n")
    result = mmad.score("openai", "synth", model=("gpt-4o-mini",), max_cost=1.0)   # key from the environment

Errors are `mmad.errors.MmadError` subclasses whose message is the one line the CLI prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from mmad import config
from mmad.analysis.evaluate import DatasetMean, SubsetRecord, evaluate_paths
from mmad.analysis.evaluate import dataset_means as _dataset_means
from mmad.cache.store import ResponseCache
from mmad.comparison.compare import compare_runs
from mmad.comparison.results import ComparisonReport
from mmad.data.filememo import FileMemo
from mmad.providers.factory import make_provider
from mmad.results.files import ResultTable, read_runs
from mmad.scoring.options import ScoreOptions
from mmad.scoring.session import EngineOptions, SessionResult, plan_runs, run_session

PathLike = str | Path


def load_results(*paths: PathLike, data_root: PathLike | None = None) -> dict[str, list[ResultTable]]:
    """Every result file named or found in the folders, grouped by run label (run.json's `run`)."""
    root = Path(data_root) if data_root is not None else None
    runs = read_runs([Path(p) for p in paths], data_root=root)
    return {label: tables for (label, _folder), tables in runs.items()}


def evaluate(*paths: PathLike, ties: str = "half", normal_up_to: int = 0, bootstrap: int = 0, seed: int = 0,
             data_root: PathLike | None = None, dataset: str | None = None, subset: str | None = None,
             skipped: list[Path] | None = None) -> list[SubsetRecord]:
    """`mmad eval`: AUROC, C-index and Kendall's tau-b per run and subset (with bootstrap intervals
    when `bootstrap` > 0). `ties="strict"` gives tied scores no credit, as the paper's definition.
    `dataset`/`subset` name the data of a result file whose name does not say it; runs of another
    task found in folders are left out and appended to `skipped`."""
    return evaluate_paths([Path(p) for p in paths], data_root=config.data_root(data_root), ties=ties,
                          normal_up_to=normal_up_to, bootstrap=bootstrap, seed=seed, dataset=dataset,
                          subset=subset, skipped=skipped)


def dataset_means(records: list[SubsetRecord]) -> list[DatasetMean]:
    """Table 3's numbers: each run's mean over the subsets of each dataset."""
    return _dataset_means(records)


def compare(base: PathLike, *others: PathLike, **options) -> ComparisonReport:
    """`mmad compare BASE OTHER...`: paired comparisons of runs on the items both scored, with the
    verdict lines the CLI prints (`report.comparisons[i].verdicts`). Options as `compare_runs`'s."""
    noise = [Path(p) for p in options.pop("noise", ())]
    return compare_runs(Path(base), [Path(p) for p in others], noise=noise, **options)


def score(provider: str, dataset: str, *, on_event: Callable[[object], None] | None = None,
          **options) -> SessionResult:
    """`mmad score` without the terminal: every job of the dataset (or `subset=`) through the cache
    and the provider, result files written under `out=` (default results/<run name>).

    Keyword arguments are ScoreOptions' fields (model, prompt, refs, ... as tuples for a grid;
    max_cost, concurrency, ...). Keys come from the environment only (OPENAI_API_KEY,
    ANTHROPIC_API_KEY). Returns the run summary, the budget meter and the summary.json document;
    `on_event` receives the engine's events (progress)."""
    opts = ScoreOptions(provider=provider, dataset=dataset, **options)
    client = make_provider(opts.provider, base_url=opts.base_url, timeout=opts.timeout,
                           prompt_caching=opts.prompt_cache)
    cache_dir = config.cache_dir(opts.cache_dir)
    runs, _gate = plan_runs(opts, client, FileMemo(cache_dir))
    cache = ResponseCache(cache_dir)
    try:
        return asyncio.run(run_session(client, cache, runs, EngineOptions.of(opts), on_event=on_event,
                                       command=["mmad.api.score", provider, dataset]))
    finally:
        cache.close()


__all__ = ["load_results", "evaluate", "dataset_means", "compare", "score", "ScoreOptions", "SessionResult",
           "SubsetRecord", "DatasetMean", "ComparisonReport", "ResultTable"]
