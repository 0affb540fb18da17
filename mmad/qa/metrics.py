"""MMAD-QA metrics: the published table, per dataset and averaged, with bootstrap intervals.

  - accuracy per (dataset, subtask) over the questions that were answered; "Object Structure"
    and "Object Details" count as "Object Analysis" (the reference summary merges them);
  - Anomaly Detection is balanced: (normal accuracy + anomaly accuracy) / 2, an image being
    normal when 'good' is in its path (the reference's rule); undefined (NaN) when a dataset has
    no answered normal or no answered anomalous detection question (the reference writes 0);
  - a dataset's Average is the mean over its subtask columns that are defined (the reference
    writes 0 for a subtask a dataset lacks and averages that in); the last row is the mean over
    datasets of every column, its Average the mean of the datasets' Averages;
  - Overkill = 1 - normal accuracy, Miss = 1 - anomaly accuracy (detection questions);
  - failed answers (parse_failed, refused, error, not asked) and pending questions are left out
    of every accuracy and counted; they are never scored as wrong;
  - intervals: percentile bootstrap resampling *images* (all questions of an image go
    together: they share the picture), stratified by dataset and by normal / anomalous image, so
    every resample keeps each dataset's normal and anomalous image counts; every dataset is
    resampled independently within one replicate, which gives the interval of the mean row.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SUBTASKS = ("Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
            "Defect Analysis", "Object Classification", "Object Analysis")
MERGED = {"Object Structure": "Object Analysis", "Object Details": "Object Analysis"}
DETECTION = SUBTASKS[0]
NORMAL_FLAG = "good"
SUMMARY_KEYS = ("Average", "Overkill", "Miss")


def column_of(subtask: str) -> str:
    return MERGED.get(subtask, subtask)


def is_normal(image: str) -> bool:
    return NORMAL_FLAG in image


def columns_of(rows: Iterable) -> tuple[str, ...]:
    """The subtask columns of a set of rows: the seven published ones first, in their order."""
    present = dict.fromkeys(column_of(row.subtask) for row in rows)
    return tuple(c for c in SUBTASKS if c in present) + tuple(c for c in present if c not in SUBTASKS)


def slots_of(columns: Sequence[str]) -> list[tuple[str, bool | None]]:
    """Count slots: detection splits into (normal, anomalous); every other column is one slot."""
    out: list[tuple[str, bool | None]] = []
    for column in columns:
        out.extend([(column, True), (column, False)] if column == DETECTION else [(column, None)])
    return out


@dataclass(frozen=True)
class ImageCounts:
    """Per image: questions answered and answered correctly, per slot."""

    images: tuple[str, ...]
    normal: np.ndarray  # bool per image
    answered: np.ndarray  # images x slots
    correct: np.ndarray


def image_counts(rows: Sequence, columns: Sequence[str], correct_of=None) -> ImageCounts:
    """Counts of the answered rows; `correct_of(row)` overrides `row.predicted == row.correct`."""
    slots = {slot: index for index, slot in enumerate(slots_of(columns))}
    images = tuple(dict.fromkeys(row.image for row in rows))
    position = {image: index for index, image in enumerate(images)}
    answered = np.zeros((len(images), len(slots)))
    correct = np.zeros_like(answered)
    for row in rows:
        if not row.answered:
            continue
        column = column_of(row.subtask)
        slot = slots[(column, is_normal(row.image) if column == DETECTION else None)]
        answered[position[row.image], slot] += 1
        correct[position[row.image], slot] += correct_of(row) if correct_of else row.predicted == row.correct
    return ImageCounts(images, np.array([is_normal(i) for i in images], dtype=bool), answered, correct)


def _ratio(correct: np.ndarray, answered: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(answered > 0, correct / np.where(answered > 0, answered, 1), np.nan)


def scores(answered: np.ndarray, correct: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Table cells from slot totals (last axis = slots; any leading axes, e.g. resamples)."""
    out: dict[str, np.ndarray] = {}
    index = 0
    normal = anomalous = np.full(answered.shape[:-1], np.nan)
    for column in columns:
        if column == DETECTION:
            normal = _ratio(correct[..., index], answered[..., index])
            anomalous = _ratio(correct[..., index + 1], answered[..., index + 1])
            out[column] = (normal + anomalous) / 2
            index += 2
        else:
            out[column] = _ratio(correct[..., index], answered[..., index])
            index += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        out["Average"] = np.nanmean(np.stack([out[c] for c in columns], axis=-1), axis=-1) if columns \
            else np.full(answered.shape[:-1], np.nan)
    out["Normal accuracy"], out["Anomaly accuracy"] = normal, anomalous
    out["Overkill"], out["Miss"] = 1 - normal, 1 - anomalous
    return out


def resample_weights(normal: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot x images: how often each image is drawn, resampling normal and anomalous images apart."""
    weights = np.zeros((n_boot, normal.size))
    for stratum in (np.flatnonzero(normal), np.flatnonzero(~normal)):
        if stratum.size:
            weights[:, stratum] = rng.multinomial(stratum.size, np.full(stratum.size, 1 / stratum.size), size=n_boot)
    return weights


def interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class DatasetScore:
    """One row of the table: a dataset of a run (dataset "Average": the mean over datasets)."""

    run: str
    dataset: str
    cells: dict[str, float]  # subtask columns, Average, Normal/Anomaly accuracy, Overkill, Miss
    answered: dict[str, int]  # per subtask column
    images: int = 0
    questions: int = 0
    failed: Counter = field(default_factory=Counter)  # status (or "not asked") -> count
    pending: int = 0
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def as_json(self, columns: Sequence[str]) -> dict:
        def number(value):
            return None if value is None or np.isnan(value) else round(float(value), 6)
        return {"run": self.run, "dataset": self.dataset, "images": self.images, "questions": self.questions,
                "answered": sum(self.answered.values()), "failed": dict(self.failed), "pending": self.pending,
                "subtasks": {c: {"accuracy": number(self.cells.get(c, np.nan)), "answered": self.answered.get(c, 0),
                                 **({"ci": [number(v) for v in self.ci[c]]} if c in self.ci else {})}
                             for c in columns},
                **{key.lower().replace(" ", "_"): number(self.cells.get(key, np.nan))
                   for key in ("Average", "Normal accuracy", "Anomaly accuracy", "Overkill", "Miss")},
                **({"ci": {k: [number(v) for v in self.ci[k]] for k in SUMMARY_KEYS if k in self.ci}}
                   if self.ci else {})}


def failure_kind(row) -> str:
    if row.status == "error" and row.note.startswith("not asked"):
        return "not asked"
    return row.status


def evaluate_run(run: str, rows: Sequence, *, bootstrap: int = 0, seed: int = 0,
                 columns: Sequence[str] | None = None) -> list[DatasetScore]:
    """The rows of one run: a DatasetScore per dataset (in first-appearance order), then the mean."""
    columns = tuple(columns or columns_of(rows))
    by_dataset: dict[str, list] = {}
    for row in rows:
        by_dataset.setdefault(row.dataset, []).append(row)
    rng = np.random.default_rng(seed)
    results, replicates = [], []
    for name, group in by_dataset.items():
        counts = image_counts(group, columns)
        cells = scores(counts.answered.sum(axis=0), counts.correct.sum(axis=0), columns)
        score = DatasetScore(run, name, {k: float(v) for k, v in cells.items()},
                             {c: int(sum(1 for r in group if r.answered and column_of(r.subtask) == c)) for c in columns},
                             images=len(counts.images), questions=len(group),
                             failed=Counter(failure_kind(r) for r in group if r.status not in ("ok", "pending")),
                             pending=sum(1 for r in group if r.status == "pending"))
        if bootstrap:
            weights = resample_weights(counts.normal, bootstrap, rng)
            boot = scores(weights @ counts.answered, weights @ counts.correct, columns)
            score.ci = {key: interval(boot[key]) for key in (*columns, *SUMMARY_KEYS)}
            replicates.append(boot)
        results.append(score)
    mean = DatasetScore(run, "Average", {}, {c: sum(r.answered[c] for r in results) for c in columns},
                        images=sum(r.images for r in results), questions=sum(r.questions for r in results),
                        failed=sum((r.failed for r in results), Counter()), pending=sum(r.pending for r in results))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in (*columns, "Average", "Normal accuracy", "Anomaly accuracy", "Overkill", "Miss"):
            mean.cells[key] = float(np.nanmean([r.cells[key] for r in results])) if results else float("nan")
            if replicates:
                mean.ci[key] = interval(np.nanmean(np.stack([b[key] for b in replicates]), axis=0))
    mean.ci = {k: v for k, v in mean.ci.items() if k in (*columns, *SUMMARY_KEYS)}
    return results + [mean]


def evaluate_runs(runs: Mapping[str, Sequence], *, bootstrap: int = 0, seed: int = 0
                  ) -> tuple[tuple[str, ...], dict[str, list[DatasetScore]]]:
    """Every run with the same columns (the union of their subtasks)."""
    columns = columns_of(row for rows in runs.values() for row in rows)
    return columns, {run: evaluate_run(run, rows, bootstrap=bootstrap, seed=seed, columns=columns)
                     for run, rows in runs.items()}
