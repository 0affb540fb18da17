"""A run in one row (the runs page and `mmad runs`), and in one page (per-subset metrics, the score
distribution per level, status counts).

Metrics are the library's: the Table-3 metrics (mmad.analysis: per subset, then the mean over a
dataset's subsets, then over datasets), MMAD-QA accuracy (mmad.qa.metrics), classification accuracy
and macro-F1 (mmad.classify.evaluate). Spend is mmad.run_data.summarize_run over the records that
count; wall time is summary.json's `elapsed_s` of the last invocation (shared when it ran a grid),
else from run.json's creation to the newest result file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from mmad.reading import read_text
from mmad.view.catalog import RunFiles
from mmad.view.items import FAILED, TODO, Items

SCORE_DEFAULTS = {"refs": 3, "reference_choice": "first", "temperature": 0.0, "max_tokens": 300, "repeat": 0,
                  "sample_seed": 0, "corrupt_references": False}
DEFAULTS = {  # what each kind of run does unless told otherwise (not shown as settings)
    "score": SCORE_DEFAULTS, "hybrid": SCORE_DEFAULTS,
    "detector": {"refs": 3, "image_size": 224, "seed": 0, "padim_dims": 100, "epochs": 30,
                 "backbone": "efficientnet_lite0"},
    "classify": {"refs": 1, "temperature": 0.0, "max_tokens": 128, "images": "velm", "reference": "velm",
                 "answer_mapping": "velm", "contour_source": "detector"},
    "qa": {"mode": "cumulative", "templates": "random", "shots": 1, "detail": "low", "max_tokens": 200,
           "answer_parsing": "official"},
}
SHOWN_APART = {"provider", "model", "method", "task", "base_url", "hybrid", "classes", "variant", "image", "prompt",
               "protocol", "references", "refusal_requests"}  # shown otherwise, or bookkeeping


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def setting_words(run: RunFiles) -> dict:
    """provider, model, prompt and every non-default setting, as short strings."""
    settings = run.settings
    prompt = settings.get("prompt")
    if isinstance(prompt, dict):  # classify keeps its prompt text: name the file
        prompt = prompt.get("file")
    other, defaults = {}, DEFAULTS.get(run.kind, {})
    for key, value in settings.items():
        if key in SHOWN_APART or value is None or value is False or defaults.get(key, object()) == value:
            continue
        if key == "sample_seed" and not settings.get("sample"):
            continue
        other[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    hybrid = settings.get("hybrid")
    if isinstance(hybrid, dict):
        other["gate"] = str(hybrid.get("detector_run"))
        if hybrid.get("contour"):
            other["contour"] = hybrid["contour"]
    if run.kind == "classify" and settings.get("variant"):
        other["variant"] = settings["variant"]
    return {"provider": settings.get("provider") or ("local" if run.kind == "detector" else None),
            "model": settings.get("model") or settings.get("method"),
            "prompt": None if run.kind == "detector" else (prompt or "default"),
            "base_url": settings.get("base_url"), "other": other}


def status_counts(items: Items) -> dict[str, object]:
    counts = Counter(items.status)
    failed = sum(counts[s] for s in FAILED) + sum(n for s, n in counts.items() if s not in (*FAILED, TODO, "ok",
                                                                                          "ok (no JSONL)"))
    return {"ok": counts["ok"] + counts["ok (no JSONL)"], "failed": failed, "todo": counts[TODO],
            "total": len(items), "by_status": dict(counts)}


def _wall_time(run: RunFiles) -> tuple[float | None, str]:
    try:
        summary = json.loads(read_text((run.folder / "summary.json"), "utf-8"))
        elapsed = float(summary["elapsed_s"])
        shared = len(summary.get("runs") or [])
        return elapsed, f"last invocation, shared by {shared} runs of a grid" if shared > 1 else "last invocation"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    created = (run.info or {}).get("created")
    stamps = [p.stat().st_mtime for f in run.files for p in (f.csv, f.jsonl) if p and p.exists()]
    if created and stamps:
        try:
            start = datetime.fromisoformat(created).timestamp()
            return max(max(stamps) - start, 0.0), "run.json created to the last result file"
        except ValueError:
            pass
    return None, "not recorded"


def _run_data(run: RunFiles, items: Items):
    """The run as mmad.run_data sees it (items by their key), for its spend and latency."""
    from mmad.comparison.run_data import RunData
    from mmad.results.files import ResultTable
    tables, records = {}, {}
    rows_of: list[list[int]] = [[] for _ in items.files]
    for index, sub in enumerate(items.sub):
        rows_of[sub].append(index)
    for sub, result in enumerate(items.files):
        rows = rows_of[sub]
        key = (result.dataset, result.subset)
        scores = np.array([np.nan if items.score[i] is None else items.score[i] for i in rows], dtype=float)
        source = result.csv or result.jsonl
        assert source is not None, "a result has its CSV, its JSONL or both"
        tables[key] = ResultTable(source, result.dataset, result.subset,
                                  tuple(items.key[i] for i in rows), np.zeros(len(rows)), scores, run.name)
        records[key] = {items.key[i]: final for i in rows if (final := items.finals[i]) is not None}
    return RunData(run.label, run.folder, run.info, tables, records)


def subset_metrics(run: RunFiles, items: Items) -> list[dict]:
    """Per subset: its metrics, status counts, and (score runs) the scores' distribution per level."""
    out = []
    sub = np.asarray(items.sub)
    for index, result in enumerate(items.files):
        rows = np.flatnonzero(sub == index)
        statuses = Counter(items.status[i] for i in rows)
        entry = {"subset": result.label, "items": int(rows.size), "statuses": dict(statuses)}
        if run.kind in ("qa", "classify"):
            entry.update(_answer_metrics(run, result, items, rows))
        else:
            entry.update(_score_metrics(items, rows))
        out.append(entry)
    return out


def _answer_metrics(run: RunFiles, result, items: Items, rows: np.ndarray) -> dict:
    """Accuracy as `mmad eval --task qa|classify` computes it (from the result CSV), or, without a
    CSV yet, the share of right answers among the answered."""
    answered = [i for i in rows if items.misrank[i] is not None]
    out: dict[str, object] = {"answered": len(answered),
           "accuracy": (1 - float(np.mean([items.misrank[i] for i in answered]))) if answered else None}
    if result.csv is None:
        return out
    from mmad.errors import DataError
    try:
        if run.kind == "classify":
            from mmad.classify.evaluate import read_category
            scores = read_category(result.csv).scores
            out.update(accuracy=_number(scores.accuracy), macro_f1=_number(scores.macro_f1))
        else:
            from mmad.qa.metrics import evaluate_run
            from mmad.qa.results import read_qa_csv
            average = evaluate_run(run.name, read_qa_csv(result.csv))[-1]
            out["accuracy"] = _number(average.cells.get("Average"))
    except (DataError, OSError, ValueError) as exc:
        out["note"] = str(exc)
    return out


def _score_metrics(items: Items, rows: np.ndarray) -> dict:
    from mmad import metrics
    from mmad.analysis.evaluate import undefined_notes
    scored = [i for i in rows if items.score[i] is not None and items.severity[i] is not None]
    levels = metrics.severity_levels(np.array([items.severity[i] for i in scored], dtype=float))
    scores = np.array([items.score[i] for i in scored], dtype=float)
    distribution = []
    for level in np.unique(levels):
        values = scores[levels == level]
        q = np.quantile(values, [0, 0.25, 0.5, 0.75, 1])
        distribution.append({"level": int(level), "n": int(values.size), "min": float(q[0]), "q1": float(q[1]),
                             "median": float(q[2]), "q3": float(q[3]), "max": float(q[4]),
                             "mean": float(values.mean())})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        summary = metrics.summarize(levels, scores) if scored else None
    return {"auroc": _number(summary.auroc) if summary else None,
            "c_index": _number(summary.c_index) if summary else None,
            "kendall_tau_b": _number(summary.kendall_tau_b) if summary else None,
            "scored": len(scored), "dropped": int(rows.size - len(scored)), "levels": distribution,
            "notes": list(undefined_notes(levels, scores)),
            "range": [float(scores.min()), float(scores.max())] if scored else None}


def headline(run: RunFiles, subsets: list[dict]) -> dict:
    """The run's Table-3 numbers (mean over each dataset's subsets, then over datasets), or its
    accuracy for QA / classification."""
    key = {"qa": ("accuracy",), "classify": ("accuracy", "macro_f1")}.get(run.kind, ("auroc", "kendall_tau_b", "c_index"))
    by_dataset: dict[str, list[dict]] = {}
    for entry in subsets:
        by_dataset.setdefault(entry["subset"].split("/")[0], []).append(entry)
    out = {}
    for metric in key:
        means = []
        for group in by_dataset.values():
            values = [e[metric] for e in group if e.get(metric) is not None]
            if values:
                means.append(float(np.mean(values)))
        out[metric] = float(np.mean(means)) if means else None
    return out


def summarize(run: RunFiles, items: Items, prices=None, subsets: list[dict] | None = None) -> dict:
    """Everything the runs page shows of one run."""
    from mmad.comparison.run_data import summarize_run
    spent = summarize_run(_run_data(run, items), prices)
    wall, wall_note = _wall_time(run)
    subsets = subset_metrics(run, items) if subsets is None else subsets
    return {"rid": run.rid, "name": run.label, "kind": run.kind, "folder": str(run.folder),
            "created": (run.info or {}).get("created"), "settings": setting_words(run),
            "jobs": status_counts(items), "cost_usd": spent.cost_usd, "cost_note": spent.cost_note,
            "tokens": spent.tokens, "median_latency_s": spent.median_latency_s, "wall_s": wall,
            "wall_note": wall_note, "metrics": headline(run, subsets), "subsets": len(items.files),
            "datasets": sorted({f.dataset for f in items.files})}


def run_page(run: RunFiles, items: Items, prices=None, summary: dict | None = None) -> dict:
    """The run page's header: the summary (given when already known), the run.json, and per-subset
    metrics and distributions."""
    subsets = subset_metrics(run, items)
    return {**(summary or summarize(run, items, prices, subsets)), "info": run.info, "per_subset": subsets}


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
