"""Classification metrics (numpy only): accuracy, macro-F1, micro-F1, Cohen's kappa, confusion
matrix, and the negligible-vs-critical grouping. The numbers equal scikit-learn's
(`accuracy_score`, `f1_score(average="macro"|"micro")`, `cohen_kappa_score`,
`confusion_matrix`) on the effective labels; the tests check that.

Multi-type ground truth (`effective_truth`): an image with several types counts as correct when
the prediction is any of them, and is counted under the predicted type in that case, else under
its first listed type. Macro-F1 averages over every label that occurs as a truth or a prediction
(scikit-learn's default), so a prediction "unknown" costs F1 as a class of its own.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mmad.classify.classes import NORMAL, UNKNOWN


def effective_truth(truths: Sequence[Sequence[str]], predicted: Sequence[str]) -> list[str]:
    """One true label per image: the prediction when it is one of the image's types, else the first type."""
    return [pred if pred in truth else truth[0] for truth, pred in zip(truths, predicted)]


def label_order(labels, preferred: Sequence[str] = ()) -> list[str]:
    """`good` first, then the class file's order, then any other label sorted, `unknown` last."""
    present = set(labels)
    order = [NORMAL] if NORMAL in present else []
    order += [name for name in preferred if name in present and name not in order]
    order += sorted(present - set(order) - {UNKNOWN})
    return order + ([UNKNOWN] if UNKNOWN in present else [])


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Rows: true label, columns: predicted label (scikit-learn's convention)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        matrix[index[t], index[p]] += 1
    return matrix


@dataclass(frozen=True)
class ClassScores:
    n: int
    accuracy: float
    macro_f1: float
    micro_f1: float
    kappa: float
    labels: tuple[str, ...]
    matrix: np.ndarray


def classification_scores(y_true: Sequence[str], y_pred: Sequence[str], preferred: Sequence[str] = ()) -> ClassScores:
    labels = label_order(list(y_true) + list(y_pred), preferred)
    matrix = confusion(y_true, y_pred, labels)
    n = int(matrix.sum())
    if n == 0:
        return ClassScores(0, math.nan, math.nan, math.nan, math.nan, tuple(labels), matrix)
    tp = np.diag(matrix).astype(np.float64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    observed = tp.sum() / n
    expected = float((matrix.sum(axis=1) * matrix.sum(axis=0)).sum()) / n ** 2
    kappa = (observed - expected) / (1 - expected) if expected < 1 else math.nan
    return ClassScores(n, float(observed), float(f1.mean()), float(micro), float(kappa), tuple(labels), matrix)


# --------------------------------------------------------------------------- negligible vs critical

GROUP_A, GROUP_B = "A", "B"


def random_grouping(classes: Sequence[str], seed: int, subset: str) -> tuple[frozenset, frozenset]:
    """VELM's rule: 1 class (objects with <= 4 classes) or 2 (> 4) drawn as group A, the rest B;
    seeded by `seed` and the subset's name (numpy's default_rng over the sorted class names)."""
    names = sorted(classes)
    take = 1 if len(names) <= 4 else 2
    rng = np.random.default_rng([seed, zlib.crc32(subset.encode())])
    chosen = frozenset(names[i] for i in rng.choice(len(names), size=min(take, len(names)), replace=False))
    return chosen, frozenset(names) - chosen


def group_accuracy(truths: Sequence[Sequence[str]], predicted: Sequence[str],
                   groups: Mapping[str, frozenset]) -> dict[str, float]:
    """Accuracy per group {normal, each group}: of the images whose (effective) true group it is,
    the share predicted in it. A class in no group and "unknown" map to themselves (always wrong)."""
    def group_of(label: str) -> str:
        if label == NORMAL:
            return "normal"
        return next((name for name, members in groups.items() if label in members), label)
    true_groups = [tuple(dict.fromkeys(group_of(t) for t in truth)) for truth in truths]
    pred_groups = [group_of(p) for p in predicted]
    effective = effective_truth(true_groups, pred_groups)
    out = {}
    for name in ["normal", *groups]:
        rows = [p == name for t, p in zip(effective, pred_groups) if t == name]
        out[name] = float(np.mean(rows)) if rows else math.nan
    return out
