"""Paired comparison of two MMAD-QA runs, question by question.

Only questions answered (status ok) in both runs are compared; questions in one run only, or
failed in either, are counted and left out. Per subtask (Anomaly Detection balanced, as in the
table), over all questions, and for the benchmark average (mean over datasets of each
dataset's subtask average):

  - the accuracy of each run and the difference other - base;
  - a paired percentile bootstrap interval of the difference: images are resampled (with all
    their questions, stratified by dataset and by normal / anomalous image) and the *same*
    resample is scored for both runs;
  - an exact McNemar test on the questions where exactly one run is right (two-sided binomial
    test of b vs c at p = 1/2); none for the benchmark average, which is not a per-question count.

`compare_qa_runs(base, other)` is the entry point for `mmad compare`; `mmad qa compare` prints it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmad.errors import DataError
from mmad.qa.metrics import DETECTION, column_of, columns_of, image_counts, interval, resample_weights, scores
from mmad.qa.results import load_runs

ALL = "all questions"
AVERAGE = "benchmark average"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(X <= min(b, c)) * 2 for X ~ Binomial(b + c, 1/2), capped at 1."""
    n = b + c
    if n == 0:
        return 1.0
    from scipy.stats import binom
    return float(min(1.0, 2 * binom.cdf(min(b, c), n, 0.5)))


@dataclass
class PairedRow:
    label: str
    n: int  # paired questions in this row
    base: float
    other: float
    ci: tuple[float, float] | None = None  # of other - base
    base_only: int = 0  # questions only the base run got right (McNemar b)
    other_only: int = 0  # questions only the other run got right (McNemar c)
    p_value: float | None = None

    @property
    def diff(self) -> float:
        return self.other - self.base


@dataclass
class QAComparison:
    base: str
    other: str
    rows: list[PairedRow] = field(default_factory=list)
    paired: int = 0
    only_base: int = 0
    only_other: int = 0
    failed: int = 0  # in both runs, not answered in at least one
    bootstrap: int = 0
    seed: int = 0

    def as_json(self) -> dict:
        def number(value):
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, 6)
        return {"base": self.base, "other": self.other, "paired": self.paired, "only_base": self.only_base,
                "only_other": self.only_other, "failed_in_either": self.failed, "bootstrap": self.bootstrap,
                "seed": self.seed,
                "rows": [{"label": r.label, "n": r.n, "base": number(r.base), "other": number(r.other),
                          "diff": number(r.diff), "ci": [number(v) for v in r.ci] if r.ci else None,
                          "base_only_right": r.base_only, "other_only_right": r.other_only,
                          "p_mcnemar": number(r.p_value)} for r in self.rows]}


@dataclass(frozen=True)
class _Pair:
    """A question answered in both runs, as a row for the count helpers."""

    image: str
    subtask: str
    base_right: bool
    other_right: bool
    answered: bool = True

    @property
    def dataset(self) -> str:
        return self.image.split("/")[0]


def compare_rows(base_rows: Sequence, other_rows: Sequence, *, base_label: str = "base", other_label: str = "other",
                 bootstrap: int = 1000, seed: int = 0) -> QAComparison:
    """Compare two runs' result rows (see the module docstring)."""
    base = {row.question_id: row for row in base_rows}
    other = {row.question_id: row for row in other_rows}
    shared = [qid for qid in base if qid in other]
    result = QAComparison(base_label, other_label, only_base=len(base) - len(shared),
                          only_other=len(other) - len(shared), bootstrap=bootstrap, seed=seed)
    pairs = []
    for qid in shared:
        a, b = base[qid], other[qid]
        if a.correct != b.correct or a.image != b.image:
            raise DataError(f"question {qid}: the runs disagree on its image or correct answer; "
                            f"were they made from the same annotation file?")
        if a.answered and b.answered:
            pairs.append(_Pair(a.image, a.subtask, a.predicted == a.correct, b.predicted == b.correct))
    result.failed = len(shared) - len(pairs)
    result.paired = len(pairs)
    if not pairs:
        raise DataError(f"no question is answered in both runs ({len(shared)} shared, {result.failed} failed in "
                        f"either); nothing to compare")
    columns = columns_of(pairs)
    by_dataset: dict[str, list[_Pair]] = {}
    for pair in pairs:
        by_dataset.setdefault(pair.dataset, []).append(pair)
    rng = np.random.default_rng(seed)
    draws = max(bootstrap, 0)
    per_dataset = []
    for group in by_dataset.values():
        base_counts = image_counts(group, columns, lambda p: p.base_right)
        other_counts = image_counts(group, columns, lambda p: p.other_right)
        weights = np.vstack([np.ones((1, len(base_counts.images))),
                             resample_weights(base_counts.normal, draws, rng) if draws else
                             np.zeros((0, len(base_counts.images)))])
        per_dataset.append((weights @ base_counts.answered, weights @ base_counts.correct,
                            weights @ other_counts.correct))
    answered = sum(d[0] for d in per_dataset)
    base_cells = scores(answered, sum(d[1] for d in per_dataset), columns)
    other_cells = scores(answered, sum(d[2] for d in per_dataset), columns)

    def row(label: str, base_values: np.ndarray, other_values: np.ndarray, members: list[_Pair] | None) -> PairedRow:
        ci = interval(other_values[1:] - base_values[1:]) if draws else None
        out = PairedRow(label, len(members) if members is not None else len(pairs), float(base_values[0]),
                        float(other_values[0]), ci)
        if members is not None:
            out.base_only = sum(1 for p in members if p.base_right and not p.other_right)
            out.other_only = sum(1 for p in members if p.other_right and not p.base_right)
            out.p_value = mcnemar_exact(out.base_only, out.other_only)
        return out

    for column in columns:
        members = [p for p in pairs if column_of(p.subtask) == column]
        label = f"{column} (balanced)" if column == DETECTION else column
        result.rows.append(row(label, base_cells[column], other_cells[column], members))
    all_answered = answered.sum(axis=-1)
    result.rows.append(row(ALL, sum(d[1] for d in per_dataset).sum(axis=-1) / all_answered,
                           sum(d[2] for d in per_dataset).sum(axis=-1) / all_answered, pairs))
    base_avg = np.nanmean(np.stack([scores(d[0], d[1], columns)["Average"] for d in per_dataset]), axis=0)
    other_avg = np.nanmean(np.stack([scores(d[0], d[2], columns)["Average"] for d in per_dataset]), axis=0)
    result.rows.append(row(AVERAGE, base_avg, other_avg, None))
    return result


def compare_qa_runs(base: Path, other: Path, *, bootstrap: int = 1000, seed: int = 0) -> QAComparison:
    """Compare two QA run folders (or result files); each must hold exactly one run."""
    loaded = []
    for source in (Path(base), Path(other)):
        runs = load_runs([source])
        if len(runs) != 1:
            raise DataError(f"{source}: holds {len(runs)} runs ({', '.join(runs)}); name one run's folder")
        loaded.append(next(iter(runs.items())))
    (base_label, base_rows), (other_label, other_rows) = loaded
    if base_label == other_label:
        base_label, other_label = f"{base_label} ({base})", f"{other_label} ({other})"
    return compare_rows(base_rows, other_rows, base_label=base_label, other_label=other_label,
                        bootstrap=bootstrap, seed=seed)
