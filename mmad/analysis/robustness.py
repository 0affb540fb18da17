"""Robustness to corrupted inputs (RQ6, Table 5): C-index of a run and its corrupted variants.

Runs whose run.json are the same except `settings.corrupt` (None, "brightness:S",
"gaussian_noise:S") and `settings.corrupt_references` form one group: the row of Table 5, with the
C-index (mean over the dataset's subsets) per dataset for the original and each corruption.
Runs without run.json cannot be grouped (their corruption is unknown) and are listed as such.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mmad.analysis.evaluate import SubsetRecord, dataset_means
from mmad.analysis.paper_tables import order_datasets
from mmad.analysis.runs import CORRUPT_KEYS, Run
from mmad.data.corruptions import parse_spec
from mmad.errors import ConfigError, DataError
from mmad.results.runinfo import RUN_FILE

ORIGINAL = "orig"
SHORT = {"brightness": "Brgt", "gaussian_noise": "Noise"}


def spec_label(spec: str) -> str:
    """Table 5's column names: Orig, Brgt S, Noise S."""
    if spec == ORIGINAL:
        return "Orig"
    parsed = parse_spec(spec)
    return f"{SHORT.get(parsed.name, parsed.name)} {parsed.severity}"


def _spec_order(spec: str) -> tuple[int, str, int]:
    if spec == ORIGINAL:
        return (0, "", 0)
    parsed = parse_spec(spec)
    return (1, parsed.name, parsed.severity)


@dataclass(frozen=True)
class RobustnessGroup:
    label: str  # the original run's name (or the first variant's, when no original was given)
    family: str
    runs: dict[str, str]  # spec ("orig" / canonical corruption) -> run name
    c_index: dict[str, dict[str, float]]  # spec -> dataset -> mean C-index


@dataclass(frozen=True)
class RobustnessTable:
    specs: list[str]
    datasets: list[str]
    groups: list[RobustnessGroup]
    without_info: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"specs": self.specs, "datasets": self.datasets, "runs_without_run_json": self.without_info,
                "groups": [{"label": g.label, "family": g.family, "runs": g.runs,
                            "c_index": {s: {d: (None if math.isnan(v) else v) for d, v in by_d.items()}
                                        for s, by_d in g.c_index.items()}} for g in self.groups]}


def base_key(run: Run) -> str:
    """What defines a run apart from its corruption: kind + every other setting, canonical JSON."""
    settings = {k: v for k, v in run.settings.items() if k not in CORRUPT_KEYS}
    return json.dumps({"kind": (run.info or {}).get("kind"), "settings": settings}, sort_keys=True, default=str)


def corruption_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Groups (in first-seen order) holding at least one corrupted run."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.info is not None:
            groups.setdefault(base_key(run), []).append(run)
    return [g for g in groups.values() if any(r.corrupt for r in g)]


def _run_spec(run: Run) -> str:
    if not run.corrupt:
        return ORIGINAL
    try:
        return parse_spec(run.corrupt).canonical
    except ConfigError as exc:
        raise DataError(f"{run.folders[0] / RUN_FILE}: settings.corrupt: {exc}") from None


def robustness_table(runs: Sequence[Run], records: Sequence[SubsetRecord]) -> RobustnessTable:
    means = {(m.run, m.dataset): m.c_index for m in dataset_means(records)}
    groups: list[RobustnessGroup] = []
    specs: set[str] = set()
    datasets: set[str] = set()
    for members in corruption_groups(runs):
        by_spec: dict[str, Run] = {}
        for run in members:
            spec = _run_spec(run)
            by_spec.setdefault(spec, run)
        original = by_spec.get(ORIGINAL, members[0])
        c_index = {spec: {d: v for (name, d), v in means.items() if name == run.name} for spec, run in by_spec.items()}
        specs.update(by_spec)
        datasets.update(d for by_d in c_index.values() for d in by_d)
        groups.append(RobustnessGroup(original.name, original.family,
                                      {s: r.name for s, r in by_spec.items()}, c_index))
    return RobustnessTable(sorted(specs, key=_spec_order), order_datasets(datasets), groups,
                           [r.name for r in runs if r.info is None])


def corrupted_variants(runs: Sequence[Run]) -> set[str]:
    """Names of corrupted runs whose original is among the runs: Table 3 and the curves leave them
    out (they are variants of a row, shown in Table 5), so they do not crowd the rankings."""
    hidden: set[str] = set()
    for members in corruption_groups(runs):
        if any(not r.corrupt for r in members):
            hidden.update(r.name for r in members if r.corrupt)
    return hidden
