"""What a comparison found, as data: per metric and scope the two values, the difference, its
interval and tests; per pair of runs the scopes and the verdict lines; JSON for scripts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mmad.comparison.noise import GroupNoise, NoiseBand, Scope, scope_name
from mmad.comparison.run_data import RunSummary
from mmad.metrics import stats


@dataclass
class Test:
    """One p-value of the family and its Holm-adjusted value."""

    p: float
    p_holm: float = math.nan


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class MetricResult:
    """One metric on one scope: base and other values, other - base, interval, tests."""

    metric: str
    base: float
    other: float
    diff: float
    low: float
    high: float
    bootstrap: Test
    wilcoxon: Test | None = None
    sign: stats.SignTest | None = None
    sign_test: Test | None = None
    noise: NoiseBand | None = None

    def as_json(self) -> dict:
        record = {key: _number(getattr(self, key)) for key in ("base", "other", "diff", "low", "high")}
        record.update(p=_number(self.bootstrap.p), p_holm=_number(self.bootstrap.p_holm))
        if self.wilcoxon is not None:
            record.update(wilcoxon_p=_number(self.wilcoxon.p), wilcoxon_p_holm=_number(self.wilcoxon.p_holm))
        if self.sign_test is not None:
            record.update(sign_p=_number(self.sign_test.p), sign_p_holm=_number(self.sign_test.p_holm))
        if self.sign is not None:
            record.update(wins=self.sign.wins, ties=self.sign.ties, losses=self.sign.losses)
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
    family: int = 0
    noise_measured: bool = False
    verdicts: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"base": self.base, "other": self.other, "holm_family_size": self.family,
                "dropped": self.dropped, "unpaired_subsets": self.unpaired_subsets,
                "empty_subsets": self.empty_subsets, "noise_measured": self.noise_measured,
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
