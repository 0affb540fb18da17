"""The report's comparison section: `mmad compare`'s verdicts for the runs that are variants of one
another (same method and corruption, one or two settings apart; see mmad.report.data.comparable_pairs).

Each run with variants is a base; its variants are compared with it in one `compare_runs` call, so
the verdicts carry the same procedure as `mmad compare base variant...` (primary question, fixed
sequence, Holm across the variants) and the run-to-run noise of any repeats among the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmad.analysis.runs import Run
from mmad.errors import MmadError

MAX_PAIRS = 12  # a report with many variants compares the first pairs; `mmad compare` does the rest


def variant_verdicts(runs: Sequence[Run], *, ties: str, n_boot: int, seed: int) -> list[str]:
    """The procedure and the primary verdicts (overall, or the dataset when there is one) of each
    base run against its variants."""
    from mmad.comparison.compare import compare_runs
    from mmad.report.data import comparable_pairs, repeats_of
    usable = [r for r in runs if r.tables]
    groups: dict[str, tuple[Run, list[Run]]] = {}
    pairs = comparable_pairs(usable)
    for a, b, _ in pairs[:MAX_PAIRS]:
        groups.setdefault(a.name, (a, []))[1].append(b)
    lines: list[str] = []
    for base, variants in groups.values():
        noise = [r.folders[0] for run in (base, *variants) for r in repeats_of(run, usable)]
        try:
            report = compare_runs(base.folders[0], [v.folders[0] for v in variants], ties=ties, n_boot=n_boot,
                                  seed=seed, noise=list(dict.fromkeys(noise)))
        except MmadError as error:
            lines.append(f"{', '.join(v.name for v in variants)} vs {base.name}: not compared ({error})")
            continue
        lines.append(f"{base.name} and its variant{'s' * (len(variants) != 1)} "
                     f"{', '.join(v.name for v in variants)}: {report.comparisons[0].procedure}")
        for comparison in report.comparisons:
            primary = comparison.sequence[0] if comparison.sequence else "overall"
            lines.extend(v for v in comparison.verdicts if f", {primary}: " in v)
    if len(pairs) > MAX_PAIRS:
        lines.append(f"(more variant pairs: run `mmad compare` on them; the first {MAX_PAIRS} are shown)")
    return lines
