"""Run-to-run noise: how much do repeats of one run differ, item by item and metric by metric?

Repeats are separate run folders whose run.json settings are identical except `settings.repeat`
(0, 1, 2, ...; repeat 0 is the base run); their default names are `<base run>+r1`, `+r2`, ...
Folders without run.json are matched by that naming instead. Hosted models are not deterministic
at temperature 0, so the same settings can give other scores; this module measures by how much.

The noise rule `compare` uses (`noise_band`): the run-to-run SD of a metric is the SD across
repeats (pooled over the repeat groups given, weighted by degrees of freedom). Two single runs
with the same settings differ by sqrt(2) x SD; a difference "exceeds the run-to-run noise" when
|difference| > 1.96 x sqrt(2) x SD, the 95% band of the difference between two repeats if the
noise is normal. With two or three repeats the SD itself is very uncertain (df = 1 or 2): the
degrees of freedom are printed with every band.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmad import metrics
from mmad.comparison.run_data import RunData, SubsetKey, load_runs
from mmad.errors import DataError
from mmad.metrics.stats import METRICS, observed_metrics

REPEAT_SUFFIX = re.compile(r"\+r(\d+)$")
NOISE_Z = 1.96
Scope = tuple  # ("subset", dataset, subset) | ("dataset", dataset) | ("overall",)


def scope_name(scope: Scope) -> str:
    return {"subset": lambda: f"{scope[1]}/{scope[2]}", "dataset": lambda: scope[1],
            "overall": lambda: "overall"}[scope[0]]()


# --------------------------------------------------------------------------- which runs are repeats

def repeat_index(run: RunData) -> int:
    """`settings.repeat` from run.json (absent = 0), else the `+rN` suffix of the label (none = 0)."""
    settings = run.settings
    if settings is not None:
        try:
            return int(settings.get("repeat") or 0)
        except (TypeError, ValueError):
            raise DataError(f"{run.source}: run.json settings.repeat is not an integer") from None
    match = REPEAT_SUFFIX.search(run.label)
    return int(match.group(1)) if match else 0


def is_repeat_of(a: RunData, b: RunData) -> bool:
    """Same settings except `repeat` (both have run.json), else the same name up to `+rN`."""
    if a.info is not None and b.info is not None:
        first, second = a.settings or {}, b.settings or {}
        first.pop("repeat", None)
        second.pop("repeat", None)
        return a.info.get("kind") == b.info.get("kind") and first == second
    return REPEAT_SUFFIX.sub("", a.label) == REPEAT_SUFFIX.sub("", b.label)


def group_repeats(runs: Sequence[RunData]) -> list[list[RunData]]:
    """Runs grouped by settings, each group ordered by repeat; one repeat number twice is refused."""
    groups: list[list[RunData]] = []
    for run in runs:
        for group in groups:
            if is_repeat_of(group[0], run):
                group.append(run)
                break
        else:
            groups.append([run])
    return [order_repeats(group) for group in groups]


def order_repeats(group: Sequence[RunData]) -> list[RunData]:
    """A group sorted by repeat number; the same number twice is refused."""
    ordered = sorted(group, key=repeat_index)
    seen: dict[int, RunData] = {}
    for run in ordered:
        index = repeat_index(run)
        if index in seen:
            raise DataError(f"{run.source} and {seen[index].source} are both repeat {index} of {ordered[0].label}")
        seen[index] = run
    return ordered


# --------------------------------------------------------------------------- spreads

@dataclass(frozen=True)
class ItemSpread:
    """How much one image's score moves across repeats (per subset, dataset or overall)."""

    items: int  # scored in every repeat
    dropped: int  # missing or failed in some repeat
    changed: int  # items whose score is not the same in every repeat
    mean_sd: float
    median_sd: float
    max_range: float


@dataclass(frozen=True)
class Spread:
    """One metric in each repeat."""

    values: tuple[float, ...]

    @property
    def sd(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        return float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan

    @property
    def range(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        return max(finite) - min(finite) if finite else math.nan


@dataclass(frozen=True)
class GroupNoise:
    """The repeats of one set of settings: per-item score SDs and ranges per subset, and metric
    spreads per scope (subset, dataset mean, overall mean)."""

    label: str
    runs: tuple[str, ...]
    repeats: tuple[int, ...]
    item_sd: dict[SubsetKey, np.ndarray]
    item_range: dict[SubsetKey, np.ndarray]
    dropped: dict[SubsetKey, int]
    metrics: dict[Scope, dict[str, Spread]]

    def scope_items(self) -> list[tuple[Scope, ItemSpread]]:
        """Item spreads per subset, then per dataset and overall (pooled over their items)."""
        keys = sorted(self.item_sd)
        datasets = sorted({key[0] for key in keys})
        scopes: list[tuple[Scope, list[SubsetKey]]] = [(("subset", *key), [key]) for key in keys]
        scopes += [(("dataset", d), [k for k in keys if k[0] == d]) for d in datasets]
        scopes.append((("overall",), keys))
        result = []
        for scope, members in scopes:
            sd = np.concatenate([self.item_sd[k] for k in members])
            spread = np.concatenate([self.item_range[k] for k in members])
            result.append((scope, ItemSpread(int(sd.size),
                                             sum(self.dropped[k] for k in members), int((spread > 0).sum()),
                                             float(sd.mean()) if sd.size else math.nan,
                                             float(np.median(sd)) if sd.size else math.nan,
                                             float(spread.max()) if spread.size else math.nan)))
        return result

    def as_json(self) -> dict:
        return {"run": self.label, "runs": list(self.runs), "repeats": list(self.repeats),
                "items": [{"scope": scope_name(scope), **_clean(vars(item))} for scope, item in self.scope_items()],
                "metrics": {scope_name(scope): {m: {"values": [_number(v) for v in spread.values],
                                                    "sd": _number(spread.sd), "range": _number(spread.range)}
                                                for m, spread in spreads.items()}
                            for scope, spreads in self.metrics.items()}}


def _number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _clean(record: dict) -> dict:
    return {k: _number(v) if isinstance(v, float) else v for k, v in record.items()}


def repeat_matrix(group: Sequence[RunData], key: SubsetKey) -> tuple[np.ndarray, np.ndarray, int]:
    """Levels and scores (repeats x items) of the items scored in every repeat; the dropped count."""
    tables = [run.tables[key] for run in group]
    rows = [dict(zip(t.paths, range(len(t.paths)))) for t in tables]
    every = set(rows[0]).union(*rows[1:])
    common = [p for p in tables[0].paths
              if all(p in r and math.isfinite(t.scores[r[p]]) for r, t in zip(rows, tables))]
    for table, index in zip(tables[1:], rows[1:]):
        for path in common:
            if table.severity[index[path]] != tables[0].severity[rows[0][path]]:
                raise DataError(f"{table.source}: severity of {path} differs from {tables[0].source}")
    scores = np.array([[t.scores[r[p]] for p in common] for r, t in zip(rows, tables)]).reshape(len(tables), -1)
    levels = metrics.severity_levels(np.array([tables[0].severity[rows[0][p]] for p in common]))
    return levels, scores, len(every) - len(common)


def group_noise(group: Sequence[RunData], *, ties: str = "half", label: str | None = None) -> GroupNoise:
    """Item and metric spreads over the subsets present in every repeat of the group (named after
    `label`, else its first run)."""
    if len(group) < 2:
        raise DataError(f"{group[0].source}: no repeat of {group[0].label} among the runs given")
    keys = sorted(set(group[0].tables).intersection(*(run.tables for run in group[1:])))
    if not keys:
        raise DataError(f"{group[0].label}: its repeats have no subset in common")
    item_sd, item_range, dropped_items, per_subset = {}, {}, {}, {}
    for key in keys:
        levels, scores, dropped = repeat_matrix(group, key)
        item_sd[key] = scores.std(axis=0, ddof=1) if scores.shape[1] else np.zeros(0)
        item_range[key] = scores.max(axis=0) - scores.min(axis=0) if scores.shape[1] else np.zeros(0)
        dropped_items[key] = dropped
        values = [observed_metrics(levels, row, ties=ties) if row.size else dict.fromkeys(METRICS, math.nan)
                  for row in scores]
        per_subset[key] = {m: tuple(v[m] for v in values) for m in METRICS}
    spreads: dict[Scope, dict[str, Spread]] = {("subset", *key): {m: Spread(v) for m, v in value.items()}
                                               for key, value in per_subset.items()}
    by_dataset: dict[str, list[SubsetKey]] = {}
    for key in keys:
        by_dataset.setdefault(key[0], []).append(key)
    dataset_values = {}
    for dataset, members in by_dataset.items():
        dataset_values[dataset] = {m: tuple(_nanmean([per_subset[k][m][r] for k in members])
                                            for r in range(len(group))) for m in METRICS}
        spreads[("dataset", dataset)] = {m: Spread(v) for m, v in dataset_values[dataset].items()}
    spreads[("overall",)] = {m: Spread(tuple(_nanmean([dataset_values[d][m][r] for d in dataset_values])
                                             for r in range(len(group)))) for m in METRICS}
    return GroupNoise(label or group[0].label, tuple(r.label for r in group), tuple(repeat_index(r) for r in group),
                      item_sd, item_range, dropped_items, spreads)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def noise_report(sources: Sequence[Path], *, ties: str = "half") -> list[GroupNoise]:
    """`mmad noise`: every run given must have at least one repeat among the others."""
    groups = group_repeats(load_runs(sources))
    return [group_noise(group, ties=ties) for group in groups]


# --------------------------------------------------------------------------- the rule compare applies

@dataclass(frozen=True)
class NoiseBand:
    """Run-to-run SD of a metric (pooled over repeat groups), its df, and the 95% band of the
    difference between two single runs: 1.96 x sqrt(2) x SD."""

    sd: float
    df: int
    repeats: int

    @property
    def band(self) -> float:
        return NOISE_Z * math.sqrt(2) * self.sd

    def exceeded_by(self, difference: float) -> bool:
        return abs(difference) > self.band


def noise_band(groups: Sequence[GroupNoise], scope: Scope, metric: str) -> NoiseBand | None:
    """Pooled SD over the groups that measured this scope (df-weighted variances); None if none did."""
    weighted, df, repeats = 0.0, 0, 0
    for group in groups:
        spread = group.metrics.get(scope, {}).get(metric)
        if spread is None or not math.isfinite(spread.sd):
            continue
        k = sum(math.isfinite(v) for v in spread.values)
        weighted += (k - 1) * spread.sd ** 2
        df += k - 1
        repeats += k
    if not df:
        return None
    return NoiseBand(math.sqrt(weighted / df), df, repeats)
