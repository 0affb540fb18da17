"""mmad: measure how well anomaly scores follow anomaly severity (MAD-Bench, arXiv 2411.14515).

The package reads as the pipeline, lowest layer first:

    metrics/    AUROC, C-index, Kendall's tau-b and their resampling (imports nothing of ours)
    data/       the benchmark on disk: datasets, templates, references, images
    prompts/    prompt texts as data, and the score parser
    providers/  OpenAI, Anthropic (and compatible servers) behind one interface
    cache/      every paid answer, content-addressed
    cost/       tokens and dollars: estimates and the budget
    results/    result files and run.json
    engine/     jobs through cache, limits, retries and records, concurrently and resumably
    hybrid/     a detector run gating the model
    scoring/    options to runs to a finished session (what `mmad score` runs)
    analysis/   the paper's analyses over finished runs
    comparison/ is a difference between runs real?
    qa/         MMAD-QA;  classify/  VELM-style anomaly classification
    report/     the HTML report
    api.py      the Python API;  cli/  the command line (the top floor)

`mmad.load_results`, `mmad.evaluate`, `mmad.dataset_means`, `mmad.compare` and `mmad.score` are
the Python API (mmad.api), loaded on first use.
"""

from mmad.version import __version__

_API = ("load_results", "evaluate", "dataset_means", "compare", "score")


def __getattr__(name: str):
    if name in _API:
        from mmad import api
        return getattr(api, name)
    raise AttributeError(f"module 'mmad' has no attribute {name!r}")


__all__ = ["__version__", *_API]
