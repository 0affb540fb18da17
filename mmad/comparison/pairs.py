"""Which runs are variants of one another: the pairs whose `mmad compare` verdict the report and
the view's static export show.

Runs of the same kind that differ in one or two settings (prompt variants, models, repeats) under
the same corruption. A pair whose corruption differs is left out, even when something else differs
too: the corruption's effect is Table 5's business, and mixing it in would confound the verdict.
Runs of different methods (PatchCore vs PaDiM, an MLLM vs its detector-gated hybrid, another task)
are not variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mmad.analysis.runs import CORRUPT_KEYS
from mmad.results.runinfo import setting_differences

MAX_VARIANT_DIFFERENCES = 2  # runs differing in at most this many settings are "variants"
METHOD_KEYS = ("method", "hybrid", "task")  # settings that make another method, not a variant


class Described(Protocol):
    info: dict | None


def comparable_pairs(runs: Sequence[Described]) -> list[tuple[Described, Described, list[str]]]:
    """(a, b, changes) for each pair of variants among `runs` (those with a run.json), in order."""
    out = []
    described = [r for r in runs if r.info is not None]
    for i, a in enumerate(described):
        for b in described[i + 1:]:
            changes = setting_differences(a.info, b.info)
            keys = {change.split(":", 1)[0] for change in changes}
            if (changes and not keys & set(CORRUPT_KEYS) and not keys & set(METHOD_KEYS)
                    and len(changes) <= MAX_VARIANT_DIFFERENCES and a.info.get("kind") == b.info.get("kind")):
                out.append((a, b, changes))
    return out
