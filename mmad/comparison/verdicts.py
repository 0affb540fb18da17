"""The words of `mmad compare`: number formats and the one-line verdicts.

A verdict says, for one metric on one dataset (or overall): the mean difference (AUROC and C-index
in points, x100; tau-b as is), its 95% interval, the Holm-adjusted p, the subsets and their
wins/ties/losses, what that means at 5%, and how the difference stands against run-to-run noise -
or that the noise was not measured (hosted models are not deterministic at temperature 0).
"""

from __future__ import annotations

import math

from mmad.comparison.noise import scope_name
from mmad.comparison.results import Comparison, MetricResult

METRIC_NAMES = {"auroc": "AUROC", "c_index": "C-index", "kendall_tau_b": "Kendall tau-b"}
ALPHA = 0.05


def format_difference(metric: str, value: float, signed: bool = True, digits: int = 1) -> str:
    """AUROC and C-index in points (x100, `digits` decimals), tau-b with `digits` + 2 decimals."""
    if value is None or not math.isfinite(value):
        return "—"
    scaled, places = (value, digits + 2) if metric == "kendall_tau_b" else (100 * value, digits)
    return f"{scaled:+.{places}f}" if signed else f"{scaled:.{places}f}"


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def verdict_lines(comparison: Comparison) -> list[str]:
    """One line per metric and dataset (and overall): the difference, its interval, the Holm p,
    subsets and wins, what it means at 5%, and how it stands against run-to-run noise."""
    lines, said = [], set()
    for result in comparison.pooled:
        for metric, r in result.metrics.items():
            if not math.isfinite(r.diff) or id(r) in said:  # one dataset: overall = that dataset
                continue
            said.add(id(r))
            unit = "" if metric == "kendall_tau_b" else " points"
            test = r.bootstrap
            sign = r.sign
            record = f"{sign.wins} win{'s' * (sign.wins != 1)}" if sign else ""
            if sign and sign.ties:
                record += f", {sign.ties} tie{'s' * (sign.ties != 1)}"
            if sign and sign.losses:
                record += f", {sign.losses} loss{'es' * (sign.losses != 1)}"
            if not math.isfinite(test.p_holm):
                meaning = "not testable (the resamples do not vary)"
            elif test.p_holm < ALPHA:
                meaning = f"{comparison.other} is {'higher' if r.diff > 0 else 'lower'}"
            else:
                meaning = "no significant difference"
            lines.append(f"{comparison.other} vs {comparison.base}, {scope_name(result.scope)}: "
                         f"{METRIC_NAMES[metric]} {format_difference(metric, r.diff)}{unit} "
                         f"[{format_difference(metric, r.low)}, {format_difference(metric, r.high)}], "
                         f"p = {format_p(test.p_holm)} (Holm), {result.subsets} subset"
                         f"{'s' * (result.subsets != 1)}, {record}: {meaning}; {_noise_clause(metric, r)}")
    return lines


def _noise_clause(metric: str, r: MetricResult) -> str:
    if r.noise is None:
        return "run-to-run noise not measured"
    band = format_difference(metric, r.noise.band, signed=False)
    where = "exceeds" if r.noise.exceeded_by(r.diff) else "within"
    return f"{where} run-to-run noise (±{band}, {r.noise.repeats} runs, df {r.noise.df})"
