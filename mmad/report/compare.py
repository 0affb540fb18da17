"""The report's comparison section: `mmad compare` verdicts for the runs that are variants of
one another (same kind and corruption, one or two settings apart; see
report_data.comparable_pairs)."""

from __future__ import annotations

from collections.abc import Sequence

from mmad.analysis.runs import Run
from mmad.errors import MmadError

MAX_PAIRS = 12  # a report with many variants compares the first pairs; `mmad compare` does the rest


def variant_verdicts(runs: Sequence[Run], *, ties: str, n_boot: int, seed: int) -> list[str]:
    """Verdict lines (overall scope, one per metric) for each pair of variants."""
    from mmad.comparison.compare import compare_runs
    from mmad.report.data import comparable_pairs
    lines: list[str] = []
    pairs = 0
    for a, b, _ in comparable_pairs([r for r in runs if r.tables]):
        if pairs == MAX_PAIRS:
            lines.append(f"(more variant pairs: run `mmad compare` on them; the first {MAX_PAIRS} are shown)")
            return lines
        pairs += 1
        try:
            report = compare_runs(a.tables[0].source.parent, [b.tables[0].source.parent], ties=ties,
                                  n_boot=n_boot, seed=seed)
        except MmadError as error:
            lines.append(f"{b.name} vs {a.name}: not compared ({error})")
            continue
        overall = [v for v in report.comparisons[0].verdicts if ", overall:" in v]
        lines.extend(overall or report.comparisons[0].verdicts[:3])
    return lines
