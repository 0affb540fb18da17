"""Which differences `mmad compare` may call: one pre-specified question per metric, a fixed
sequence after it, and a many-to-one correction across the variants compared with one base.

Per metric and comparison the hypotheses form one sequence, fixed before any data is seen:

    the primary question (by default the overall mean over datasets, the paper's Table-3 number),
    then each dataset's mean (most images first), then each subset (by dataset, most images first).

Each is tested at the full level only when every one before it was significant (a fixed-sequence
procedure), so the primary verdict's error rate is the nominal 5 % and the family-wise error over
the whole sequence is 5 % too. With `primary_only` the primary question is tested on its own and
everything else is descriptive. Several variants compared with the same base are combined by the
graphical procedure of `mmad.metrics.multiplicity` (Holm across the variants' sequences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mmad.comparison.noise import scope_name
from mmad.comparison.results import Comparison, Procedure, ScopeResult
from mmad.errors import ConfigError
from mmad.metrics import multiplicity

SIGNIFICANT, NOT_SIGNIFICANT, NOT_REACHED, NOT_TESTABLE, DESCRIPTIVE = (
    "significant", "not significant", "not reached", "not testable", "descriptive")


def sequence(comparison: Comparison, procedure: Procedure) -> list[ScopeResult]:
    """The scopes of one comparison in the order they are tested."""
    datasets = [p for p in comparison.pooled if p.scope[0] == "dataset"]
    datasets.sort(key=lambda p: (-p.items, p.scope[1]))
    rank = {p.scope[1]: i for i, p in enumerate(datasets)}
    subsets = sorted(comparison.subsets, key=lambda s: (rank.get(s.scope[1], 0), -s.items, s.scope[2]))
    if procedure.primary == "overall":
        overall = [p for p in comparison.pooled if p.scope == ("overall",)]
        head = overall if len(datasets) > 1 else []
        order = head + datasets + subsets
    else:
        chosen = [p for p in datasets if p.scope[1] == procedure.primary]
        if not chosen:
            names = ", ".join(sorted(p.scope[1] for p in datasets))
            raise ConfigError(f"--primary {procedure.primary}: no such dataset in {comparison.other} vs "
                              f"{comparison.base} (datasets: {names})")
        order = chosen + [s for s in subsets if s.scope[1] == procedure.primary]
    return order[:1] if procedure.primary_only else order


def apply_procedure(comparisons: Sequence[Comparison], procedure: Procedure, metrics: Sequence[str]) -> None:
    """Set p_adjusted and status of every metric result of the comparisons (variants of one base)."""
    orders = [sequence(c, procedure) for c in comparisons]
    for comparison in comparisons:
        for scope in comparison.subsets + comparison.pooled:
            for result in scope.metrics.values():
                result.status, result.p_adjusted = DESCRIPTIVE, math.nan
    for metric in metrics:
        chains = [[scope.metrics[metric] for scope in order] for order in orders]
        weights, transitions = multiplicity.chain_graph([len(chain) for chain in chains])
        flat = [result for chain in chains for result in chain]
        adjusted = multiplicity.graphical_adjusted([r.p for r in flat], weights, transitions)
        for result, value in zip(flat, adjusted):
            result.p_adjusted = float(value)
        for chain in chains:
            reached = True
            for result in chain:
                if not math.isfinite(result.p):
                    result.status = NOT_TESTABLE if reached else NOT_REACHED
                elif result.p_adjusted <= procedure.alpha:
                    result.status = SIGNIFICANT
                else:
                    result.status = NOT_SIGNIFICANT if reached else NOT_REACHED
                reached = reached and result.status == SIGNIFICANT
    for comparison, order in zip(comparisons, orders):
        comparison.procedure = describe(procedure, order, len(comparisons), comparison.base)
        comparison.sequence = [scope_name(s.scope) for s in order]


def describe(procedure: Procedure, order: Sequence[ScopeResult], variants: int, base: str) -> str:
    """The procedure in words, printed before the verdicts."""
    level = f"{100 * procedure.alpha:g} %"
    if not order:
        return "nothing to test"
    first = scope_name(order[0].scope)
    primary = ("the overall mean over datasets (Table 3)" if order[0].scope == ("overall",)
               else f"the mean over {first}'s subsets" if order[0].scope[0] == "dataset" else first)
    if procedure.primary_only or len(order) == 1:
        text = f"primary question per metric: {primary}, tested on its own at {level}; every other row is descriptive"
    else:
        datasets = [scope_name(s.scope) for s in order if s.scope[0] == "dataset" and s is not order[0]]
        then = []
        if datasets:
            then.append(f"the datasets' means ({', '.join(datasets)})")
        if any(s.scope[0] == "subset" for s in order):
            then.append("the subsets (most images first)")
        text = (f"primary question per metric: {primary}; then {' and then '.join(then)}, as a fixed sequence "
                f"at {level}: each is tested only when all before it were significant (family-wise error "
                f"{level} per metric)")
    if variants > 1:
        text += (f"; across the {variants} variants compared with {base}: Holm (graphical procedure, each "
                 f"variant's sequence starts at {level}/{variants})")
    return text
