"""Which runs are variants of one another: the pairs whose `mmad compare` verdicts the report and
the view's static export show.

Variants are runs of the same method (the same kind, model and provider, or the same detector and
backbone) that differ in one or two other settings (prompt, references, ...) under the same
corruption. Different methods (another model, provider or detector; a model and its detector-gated
hybrid; another task) are not variants of one another, and repeats (only `repeat` differs) measure
run-to-run noise: they are not compared. A pair whose corruption differs is left out, even when
something else differs too: the corruption's effect is Table 5's business, and mixing it in would
confound the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from mmad.analysis.runs import CORRUPT_KEYS
from mmad.results.runinfo import setting_differences

MAX_VARIANT_DIFFERENCES = 2  # runs differing in at most this many settings are "variants"
# settings whose change makes another method, not a variant
METHOD_KEYS = ("kind", "method", "model", "provider", "base_url", "backbone", "weights", "hybrid", "task")


class Described(Protocol):
    @property
    def info(self) -> dict | None: ...

    @property
    def settings(self) -> dict: ...


D = TypeVar("D", bound=Described)  # the caller's own run type, handed back


def comparable_pairs(runs: Sequence[D]) -> list[tuple[D, D, list[str]]]:
    """(a, b, changes) for each pair of variants among `runs` (those with a run.json), in order."""
    out = []
    described = [(r, r.info) for r in runs if r.info is not None and not r.settings.get("repeat")]
    for i, (a, a_info) in enumerate(described):
        for b, b_info in described[i + 1:]:
            changes = setting_differences(a_info, b_info)
            keys = {c.split(":", 1)[0] for c in changes}
            if (changes and not keys & set(CORRUPT_KEYS) and not keys & set(METHOD_KEYS) and "repeat" not in keys
                    and len(changes) <= MAX_VARIANT_DIFFERENCES):
                out.append((a, b, changes))
    return out


def repeats_of(run: D, runs: Sequence[D]) -> list[D]:
    """The other runs among `runs` whose settings equal this run's except `repeat`."""
    if run.info is None:
        return []
    return [r for r in runs if r is not run and r.info is not None
            and {c.split(":", 1)[0] for c in setting_differences(run.info, r.info)} == {"repeat"}]
