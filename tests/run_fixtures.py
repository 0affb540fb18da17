"""Run folders for the report tests, written the way mmad writes them: `<run>_<dataset>_<subset>`
CSV + JSONL (whose first record names dataset and subset), and run.json when a kind is given."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mmad.data.templates import write_result_csv
from mmad.results.runinfo import make_run_info


def write_run(folder: Path, name: str, subsets: dict[tuple[str, str], tuple[Sequence[float], Sequence[float | None]]],
              *, kind: str | None = None, settings: dict | None = None, source: str = "live",
              paths: dict[tuple[str, str], Sequence[str]] | None = None) -> Path:
    """subsets: (dataset, subset) -> (severities, scores); None score = a failed job."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind is not None:
        (folder / "run.json").write_text(json.dumps(make_run_info(name, kind, settings or {})))
    for (dataset, subset), (severities, scores) in subsets.items():
        rels = list(paths[(dataset, subset)]) if paths else [f"img/{i:03d}.png" for i in range(len(severities))]
        stem = folder / f"{name}_{dataset}_{subset}"
        write_result_csv(stem.with_suffix(".csv"), zip(rels, severities, scores))
        with open(stem.with_suffix(".jsonl"), "w") as handle:
            for rel, sev, score in zip(rels, severities, scores):
                handle.write(json.dumps({"dataset": dataset, "subset": subset, "path": rel, "severity": sev,
                                         "score": score, "status": "ok" if score is not None else "error",
                                         "source": source}) + "\n")
    return folder
