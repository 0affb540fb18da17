"""What a comparison found, as data: per metric and scope the two values, the difference, its
interval, its test and what the procedure made of it; per pair of runs the scopes, the procedure
and the verdict lines; JSON for scripts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mmad.comparison.noise import GroupNoise, NoiseBand, Scope, scope_name
from mmad.comparison.run_data import RunSummary
from mmad.comparison.scopes import ALPHA, RankTests


@dataclass(frozen=True)
class Procedure:
    """What is tested (mmad.comparison.decisions): `primary` is "overall" or a dataset;
    `primary_only` tests it on its own."""

    primary: str = "overall"
    primary_only: bool = False
    alpha: float = ALPHA


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class MetricResult:
    """One metric on one scope: values, other - base, interval, test, and what the procedure made of it."""

    metric: str
    base: float
    other: float
    diff: float
    low: float
    high: float
    se: float  # standard error from the images (U-statistic)
    p: float  # the scope's own test (images, and run-to-run noise when measured)
    defined: int = 1  # subsets where the metric is defined (of those pooled)
    undefined: int = 0
    rank: RankTests | None = None
    noise: NoiseBand | None = None
    p_adjusted: float = math.nan  # within the procedure (mmad.comparison.decisions)
    status: str = "descriptive"

    def as_json(self) -> dict:
        record: dict[str, object] = {key: _number(getattr(self, key)) for key in ("base", "other", "diff", "low", "high", "se", "p",
                                                                "p_adjusted")}
        record.update(status=self.status, subsets_defined=self.defined, subsets_undefined=self.undefined)
        if self.rank is not None:
            record["rank_tests"] = self.rank.as_json()
        if self.noise is not None:
            record["noise"] = {"sd": _number(self.noise.sd), "df": self.noise.df, "runs": self.noise.repeats,
                               "band": _number(self.noise.band), "exceeded": self.noise.exceeded_by(self.diff)}
        return record


@dataclass
class ScopeResult:
    """A subset, a dataset mean or the overall mean."""

    scope: Scope
    subsets: int
    items: int
    metrics: dict[str, MetricResult]

    def as_json(self) -> dict:
        return {"scope": scope_name(self.scope), "subsets": self.subsets, "items": self.items,
                "metrics": {m: r.as_json() for m, r in self.metrics.items()}}


@dataclass
class Comparison:
    base: str
    other: str
    subsets: list[ScopeResult]
    pooled: list[ScopeResult]
    dropped: dict[str, dict[str, int]]  # run label -> reason -> items
    unpaired_subsets: dict[str, list[str]]  # run label -> subsets the other run lacks
    empty_subsets: list[str] = field(default_factory=list)  # in both runs, but no item scored in both
    noise_measured: bool = False
    procedure: str = ""
    sequence: list[str] = field(default_factory=list)  # scopes in the order they are tested
    notes: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"base": self.base, "other": self.other, "procedure": self.procedure, "sequence": self.sequence,
                "dropped": self.dropped, "unpaired_subsets": self.unpaired_subsets,
                "empty_subsets": self.empty_subsets, "noise_measured": self.noise_measured, "notes": self.notes,
                "subsets": [s.as_json() for s in self.subsets], "pooled": [p.as_json() for p in self.pooled],
                "verdicts": self.verdicts}


@dataclass
class ComparisonReport:
    runs: list[RunSummary]
    comparisons: list[Comparison]
    noise: list[GroupNoise]
    n_boot: int
    seed: int
    ties: str
    procedure: Procedure = field(default_factory=Procedure)
