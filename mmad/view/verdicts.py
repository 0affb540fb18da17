"""`mmad compare` for two runs of the view: its verdict lines and pooled numbers (score runs, with
the run-to-run noise of `+rN` repeats beside them, as `mmad compare` finds them), or the paired
MMAD-QA comparison. The side-by-side page shows these on top of its items."""

from __future__ import annotations

import glob
import math
from pathlib import Path

from mmad.errors import MmadError
from mmad.view.catalog import RunFiles

SCORE_KINDS = ("score", "detector", "hybrid")


def repeats_beside(folders: list[Path]) -> list[Path]:
    """Repeat folders (`<run>+r1`, `<run>+r2`, ...) beside the compared folders, as `mmad compare`."""
    found = []
    for folder in folders:
        found.extend(sorted(p for p in folder.parent.glob(f"{glob.escape(folder.name)}+r*")
                            if p.is_dir() and p.name[len(folder.name) + 2:].isdigit()))
    return found


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def comparable(a: RunFiles, b: RunFiles) -> str | None:
    """None when `compare` can pair the two runs, else why not."""
    if a.kind in SCORE_KINDS and b.kind in SCORE_KINDS:
        return None
    if a.kind == b.kind == "qa":
        return None
    if a.kind == b.kind == "classify":
        return "classification runs have no paired test in `mmad compare`; the items are paired below"
    return f"a {a.kind} run and a {b.kind} run answer different questions: not compared"


def verdict(base: RunFiles, other: RunFiles, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """What `mmad compare BASE OTHER` concludes: verdict lines, pooled rows, what was dropped."""
    why = comparable(base, other)
    if why:
        return {"verdicts": [], "note": why}
    try:
        if base.kind == "qa":
            return _qa(base, other, n_boot, seed)
        from mmad.comparison.compare import compare_runs
        noise = repeats_beside([base.folder, other.folder])
        report = compare_runs(base.folder, [other.folder], n_boot=n_boot, seed=seed, noise=noise)
    except MmadError as exc:
        return {"verdicts": [], "note": f"not compared: {exc}"}
    comparison = report.comparisons[0]
    pooled = [{"scope": p.as_json()["scope"], "subsets": p.subsets, "items": p.items,
               "metrics": {m: {k: _number(v) for k, v in r.as_json().items() if k in ("base", "other", "diff", "low",
                                                                                     "high", "p_holm")}
                           for m, r in p.metrics.items()}} for p in comparison.pooled]
    note = "" if comparison.noise_measured else ("run-to-run noise not measured (no +rN repeats beside the runs); "
                                                 "hosted models are not deterministic at temperature 0")
    return {"verdicts": comparison.verdicts, "pooled": pooled, "dropped": comparison.dropped,
            "procedure": comparison.procedure, "notes": comparison.notes, "n_boot": n_boot, "seed": seed,
            "note": note, "noise_runs": [p.name for p in noise]}


def _qa(base: RunFiles, other: RunFiles, n_boot: int, seed: int) -> dict:
    from mmad.qa.compare import compare_qa_runs
    result = compare_qa_runs(base.folder, other.folder, bootstrap=min(n_boot, 1000), seed=seed)
    lines = []
    for row in result.rows:
        if row.n == 0 or math.isnan(row.diff):
            continue
        ci = f" [{100 * row.ci[0]:+.1f}, {100 * row.ci[1]:+.1f}]" if row.ci else ""
        p = f", McNemar p = {row.p_value:.3g}" if row.p_value is not None else ""
        lines.append(f"{result.other} vs {result.base}, {row.label}: accuracy {100 * row.diff:+.1f} points{ci}{p} "
                     f"({row.n} questions)")
    return {"verdicts": lines, "qa": result.as_json(), "note": f"{result.paired} questions answered in both runs; "
            f"{result.failed} failed in either are left out"}
