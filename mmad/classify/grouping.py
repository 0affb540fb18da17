"""Negligible anomaly vs critical defect: per-group accuracy over a random grouping of the classes.

`velm` (default; VELM's anomaly_vs_defect.py):
  - per seed 0..S-1: Python's `random.seed(seed)`, then for every category of the class file, in
    the file's order (the draw walks them all, evaluated or not): its classes sorted by how many
    rows have a true class whose *display name* equals the class's folder key (VELM's sort key;
    most are 0, the sort is stable), `random.shuffle`d, and the first 1 (categories with <= 4
    classes) or 2 taken as group A (negligible), the rest group B (critical);
  - a row's true group: normal (`good`), A or B; its predicted group likewise, where an answer
    mapped to no class (`unknown`) counts with B, as VELM counts it;
  - per category and group the accuracy (rows of that true group predicted in it); per category
    the mean and the (population) std over seeds; the figure is the mean over categories, and
    the "±" is the MEAN of the per-category stds (not the std of the category mean).
  A group without rows in a category is left out (VELM would count it as accuracy 0; with its
  data every group has rows).

`mmad` (`--grouping-rule mmad`): 1 or 2 classes drawn as group A by numpy's default_rng seeded by
(seed, the category's name), an `unknown` answer a group of its own (always wrong), and the ±
the std over seeds of the mean over categories.

`--groups FILE` names the groups per category instead (no seeds). Multi-type rows (MAD-Bench's
"melt,scratch") count under the predicted type when it is one of theirs, else the first.
"""

from __future__ import annotations

import math
import random
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmad.classify.classes import NORMAL
from mmad.classify.scores import effective_truth, group_accuracy, random_grouping
from mmad.errors import ConfigError
from mmad.reading import read_text

RULES = ("velm", "mmad")


def load_groups(path: Path) -> dict[str, dict[str, frozenset]]:
    """A grouping file: per subset, two named groups of class names, e.g.

        [brick]
        negligible = ["blotch"]
        critical = ["scratch"]
    """
    try:
        data = tomllib.loads(read_text(Path(path), "utf-8"))
    except OSError as exc:
        raise ConfigError(f"--groups {path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    out = {}
    for subset, groups in data.items():
        if not isinstance(groups, dict) or len(groups) != 2 or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in groups.values()):
            raise ConfigError(f"{path}: [{subset}] must hold exactly two groups, each a list of class names")
        out[subset] = {name: frozenset(members) for name, members in groups.items()}
    return out


@dataclass(frozen=True)
class GroupResult:
    run: str
    groups: tuple[str, ...]  # "normal" first
    mean: dict[str, float]
    std: dict[str, float]  # the rule's "±" (0 for a user grouping)
    seeds: int  # 0: a user grouping
    rule: str = "velm"


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def velm_draw(order: dict[str, list[str]], counts: dict[str, Counter], seed: int) -> dict[str, set[str]]:
    """Group A of every category for one seed (see the module docstring)."""
    random.seed(seed)
    chosen = {}
    for category, keys in order.items():
        take = 1 if len(keys) <= 4 else 2
        shuffled = sorted(keys, key=lambda key: -counts.get(category, Counter())[key])
        random.shuffle(shuffled)
        chosen[category] = set(shuffled[:take])
    return chosen


def velm_group_rows(rows: Sequence[tuple[str, str, str]], order: dict[str, list[str]],
                    displays: dict[str, dict[str, str]], seeds: int) -> tuple[dict, dict]:
    """rows: (category, true key, predicted key / "good" / "unknown"). Returns (mean, std) per
    group {normal, A, B}: VELM's overall accuracy and its "±"."""
    counts: dict[str, Counter] = {}
    for category, truth, _ in rows:
        counts.setdefault(category, Counter())[displays.get(category, {}).get(truth, truth)] += 1
    per_category: dict[str, dict[str, list[float]]] = {}
    for seed in range(seeds):
        chosen = velm_draw(order, counts, seed)
        tally: dict[str, dict[str, list[int]]] = {}
        for category, truth, predicted in rows:
            def group(label: str) -> str:
                return "normal" if label == NORMAL else "A" if label in chosen.get(category, ()) else "B"
            cell = tally.setdefault(category, {}).setdefault(group(truth), [0, 0])
            cell[0] += group(predicted) == group(truth)
            cell[1] += 1
        for category, groups in tally.items():
            for name in ("normal", "A", "B"):
                correct, total = groups.get(name, (0, 0))
                per_category.setdefault(category, {}).setdefault(name, []).append(
                    correct / total if total else math.nan)
    mean = {name: _nanmean([_nanmean(g[name]) for g in per_category.values()]) for name in ("normal", "A", "B")}
    std = {name: _nanmean([float(np.std([v for v in g[name] if not math.isnan(v)]))
                           if any(not math.isnan(v) for v in g[name]) else math.nan
                           for g in per_category.values()]) for name in ("normal", "A", "B")}
    return mean, std


def grouping(results: Sequence, *, groups_file: Path | None, seeds: int, rule: str = "velm") -> list[GroupResult]:
    """Per run: per-group accuracy, mean over categories (see the module docstring)."""
    user = load_groups(groups_file) if groups_file else None
    out = []
    for run in dict.fromkeys(r.run for r in results):
        categories = [r for r in results if r.run == run]
        if user is None and rule == "velm":
            out.append(_velm(run, categories, seeds))
            continue
        per_seed = []
        for seed in range(seeds if user is None else 1):
            rows = []
            for r in categories:
                if user is not None:
                    named = _user_groups(user, r, groups_file)
                else:
                    a, b = random_grouping(r.classes, seed, r.subset)
                    named = {"A": a, "B": b}
                rows.append(group_accuracy(r.truths, r.predicted, named))
            names = list(dict.fromkeys(name for row in rows for name in row)) or ["normal"]
            per_seed.append({name: _nanmean([row.get(name, math.nan) for row in rows]) for name in names})
        groups = tuple(dict.fromkeys(name for s in per_seed for name in s))
        values = {n: [s[n] for s in per_seed if not math.isnan(s.get(n, math.nan))] for n in groups}
        mean = {n: float(np.mean(v)) if v else math.nan for n, v in values.items()}
        std = {n: float(np.std(v)) if v else math.nan for n, v in values.items()}
        out.append(GroupResult(run, groups, mean, std, 0 if user is not None else seeds,
                               "groups file" if user is not None else "mmad"))
    return out


def _user_groups(user: dict, r, groups_file: Path | None) -> dict[str, frozenset]:
    if r.subset not in user:
        raise ConfigError(f"{groups_file}: no grouping for {r.subset!r}")
    named = user[r.subset]
    stray = set(r.classes) - set().union(*named.values())
    if stray:
        raise ConfigError(f"{groups_file}: [{r.subset}] leaves class(es) {', '.join(sorted(stray))} in no group")
    return named


def _velm(run: str, categories: Sequence, seeds: int) -> GroupResult:
    order = next((r.order for r in categories if r.order), None) or {r.subset: list(r.classes) for r in categories}
    displays = next((r.displays for r in categories if r.displays), None) or {}
    rows = []
    for r in categories:
        for truth, predicted in zip(effective_truth(r.truths, r.predicted), r.predicted):
            rows.append((r.subset, truth, predicted))
    mean, std = velm_group_rows(rows, order, displays, seeds)
    return GroupResult(run, ("normal", "A", "B"), mean, std, seeds, "velm")
