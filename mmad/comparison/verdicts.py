"""The words of `mmad compare`: number formats and the one-line verdicts.

A verdict says, for one metric on one dataset (or overall): the difference (AUROC and C-index in
points, x100; tau-b as is), its 95% interval, the test's p and its adjusted p under the
comparison's procedure, what the procedure concluded, how many subsets (or datasets) the row
stands on and how they split, and the run-to-run noise: how many runs measured it and what they can
resolve - or that it was not measured (hosted models are not deterministic at temperature 0).
Only a difference the procedure rejected is called "higher" or "lower"; the procedure already
holds the run-to-run noise, so no line says both "higher" and "within the noise".
"""

from __future__ import annotations

import math

from mmad.comparison.decisions import DESCRIPTIVE, NOT_REACHED, NOT_SIGNIFICANT, NOT_TESTABLE, SIGNIFICANT
from mmad.comparison.noise import scope_name
from mmad.comparison.results import Comparison, MetricResult

METRIC_NAMES = {"auroc": "AUROC", "c_index": "C-index", "kendall_tau_b": "Kendall tau-b"}


def format_difference(metric: str, value: float, signed: bool = True, digits: int = 1) -> str:
    """AUROC and C-index in points (x100, `digits` decimals), tau-b with `digits` + 2 decimals."""
    if value is None or not math.isfinite(value):
        return "—"
    scaled, places = (value, digits + 2) if metric == "kendall_tau_b" else (100 * value, digits)
    return f"{scaled:+.{places}f}" if signed else f"{scaled:.{places}f}"


def format_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def verdict_lines(comparison: Comparison) -> list[str]:
    """One line per metric and dataset (and overall, when there are several datasets), in the
    order the procedure tests them: the primary question first."""
    rank = {name: i for i, name in enumerate(comparison.sequence)}
    datasets = [s for s in comparison.pooled if s.scope[0] == "dataset"]
    scopes = [s for s in comparison.pooled if len(datasets) > 1 or s.scope[0] == "dataset"]  # one: overall = it
    scopes.sort(key=lambda s: (s.scope != ("overall",), rank.get(scope_name(s.scope), 1e9)))
    lines, said = [], set()
    for result in scopes:
        for metric, r in result.metrics.items():
            if not math.isfinite(r.diff) or id(r) in said:
                continue
            said.add(id(r))
            unit = "" if metric == "kendall_tau_b" else " points"
            lines.append(f"{comparison.other} vs {comparison.base}, {scope_name(result.scope)}: "
                         f"{METRIC_NAMES[metric]} {format_difference(metric, r.diff)}{unit} "
                         f"[{format_difference(metric, r.low)}, {format_difference(metric, r.high)}], "
                         f"p = {format_p(r.p)}{_adjusted(r)}: {meaning(comparison, metric, r)}. "
                         f"{_basis(result.scope, r)}. {noise_clause(metric, r)}")
    return lines


def _adjusted(r: MetricResult) -> str:
    if r.status in (SIGNIFICANT, NOT_SIGNIFICANT):
        return f" (adjusted {format_p(r.p_adjusted)})"
    return ""


def meaning(comparison: Comparison, metric: str, r: MetricResult) -> str:
    """What the procedure concluded, in words."""
    if r.status == SIGNIFICANT:
        said = f"{comparison.other} is {'higher' if r.diff > 0 else 'lower'}"
        if r.low <= 0 <= r.high:  # the test and the bootstrap interval disagree: say so
            said += " (borderline: the bootstrap interval still includes 0)"
        return said
    if r.status == NOT_SIGNIFICANT:
        if r.noise is not None and not r.noise.exceeded_by(r.diff):
            return "no significant difference (within run-to-run noise)"
        return "no significant difference"
    if r.status == NOT_REACHED:
        stop = stopped_at(comparison, metric)
        return f"not tested (the sequence stopped at {stop})" if stop else "not tested"
    if r.status == NOT_TESTABLE:
        return "not testable (nothing varies between the runs' resamples)"
    if r.status == DESCRIPTIVE:
        return "descriptive (outside the tested sequence)"
    return r.status


def stopped_at(comparison: Comparison, metric: str) -> str | None:
    """The first scope of the sequence that was not significant for this metric."""
    by_name = {scope_name(s.scope): s.metrics[metric] for s in comparison.subsets + comparison.pooled}
    for name in comparison.sequence:
        result = by_name.get(name)
        if result is not None and result.status != SIGNIFICANT:
            return name
    return None


def _basis(scope: tuple, r: MetricResult) -> str:
    """What the row stands on: its subsets (or datasets), how they split, and the rank tests."""
    rank = r.rank
    units = rank.units if rank else "subsets"
    count = rank.wins + rank.ties + rank.losses if rank else r.defined
    head = f"{count} {units[:-1] if count == 1 else units}"
    if r.undefined and scope[0] != "overall":
        head = f"{r.defined} of {r.defined + r.undefined} subsets ({r.undefined} undefined)"
    elif r.undefined:
        head += f" ({r.undefined} undefined subset{'s' * (r.undefined != 1)} left out)"
    if rank is None or count < 2:
        return head
    split = ", ".join(part for part in (f"{rank.wins} higher" if rank.wins else "",
                                        f"{rank.ties} tied" if rank.ties else "",
                                        f"{rank.losses} lower" if rank.losses else "") if part)
    if rank.note:
        tests = "too few for rank tests to reach 5 %"
    else:
        tests = f"sign test p = {format_p(rank.sign_p)}, signed-rank p = {format_p(rank.wilcoxon_p)}"
    return f"{head}: {split} ({tests})"


def noise_clause(metric: str, r: MetricResult) -> str:
    if r.noise is None:
        return "Run-to-run noise not measured"
    band = format_difference(metric, r.noise.band, signed=False)
    unit = "" if metric == "kendall_tau_b" else " points"
    where = "exceeds it" if r.noise.exceeded_by(r.diff) else "is within it"
    return (f"Run-to-run noise from {r.noise.repeats} runs (df {r.noise.df}): two runs of the same settings "
            f"differ by up to ±{band}{unit} (95 %); this difference {where}")
