"""The metrics core: AUROC, C-index and Kendall's tau-b over severity levels, and their resampling.

Imports numpy and scipy only, nothing else of mmad, so every other stage (eval, compare, report,
the detectors) can depend on it and it can be vendored or tested alone.

    core.py    the point metrics (fast, tie-aware, checked against lifelines/sklearn/scipy)
    stats.py   the level-stratified paired bootstrap that compare and eval --bootstrap use

`from mmad import metrics; metrics.auroc(levels, scores)` reaches the core functions directly.
"""

from mmad.metrics.core import (
                               TIES,
                               MetricWarning,
                               PairCounts,
                               Summary,
                               auroc,
                               auroc_by_level,
                               bootstrap_ci,
                               c_index,
                               check_inputs,
                               drop_missing,
                               expand_normal,
                               kendall_tau_b,
                               pair_counts,
                               ranking_agreement,
                               severity_levels,
                               summarize,
)

__all__ = ["TIES", "MetricWarning", "PairCounts", "Summary", "auroc", "auroc_by_level", "bootstrap_ci", "c_index",
           "check_inputs", "drop_missing", "expand_normal", "kendall_tau_b", "pair_counts", "ranking_agreement",
           "severity_levels", "summarize"]
