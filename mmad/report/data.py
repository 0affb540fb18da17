"""Everything `mmad report` shows, computed once: the paper's analyses (RQ1-RQ6), failures and
spend, and the hook for `mmad compare` verdicts. `ReportData.as_json()` is the `--json` output;
the HTML page (mmad.report_html) is drawn from the same object.

Corrupted variants whose original run is among the inputs appear only in Table 5 (RQ6): the
rankings, curves and distributions use the other runs, so a corrupted copy never competes with
its own original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mmad.analysis.area import AreaTable, area_analysis
from mmad.analysis.evaluate import SubsetRecord
from mmad.analysis.paper_tables import RankAgreement, Table3, rank_agreement, table3
from mmad.analysis.robustness import RobustnessTable, corrupted_variants, robustness_table
from mmad.analysis.runs import CORRUPT_KEYS, Run, evaluate_runs, load_runs
from mmad.analysis.severity_curves import ExpansionCurves, LevelCurves, expansion_curves, level_curves
from mmad.analysis.spend import RunSpend, spend_table
from mmad.errors import ConfigError
from mmad.results.runinfo import setting_differences
from mmad.version import __version__

MAX_VARIANT_DIFFERENCES = 2  # runs differing in at most this many settings are "variants"


@dataclass
class ReportData:
    title: str
    inputs: list[str]
    ties: str
    runs: list[Run]
    records: list[SubsetRecord]  # every run, corrupted variants included
    hidden: set[str]  # corrupted variants kept out of the main tables
    table3: Table3
    agreement: RankAgreement
    area: AreaTable
    levels: LevelCurves
    expansion: ExpansionCurves
    robustness: RobustnessTable
    spend: list[RunSpend]
    variants: list[str]
    verdicts: list[str] | None = None
    skipped: list[Path] = field(default_factory=list)  # runs of another task (QA, classification) left out
    generated: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def main_runs(self) -> list[Run]:
        return [r for r in self.runs if r.name not in self.hidden]

    def as_json(self) -> dict:
        return {
            "title": self.title, "generated": self.generated, "mmad_version": __version__,
            "inputs": self.inputs, "ties": self.ties,
            "runs": [{"run": r.name, "family": r.family, "kind": (r.info or {}).get("kind"),
                      "settings": r.settings, "folders": [str(f) for f in r.folders],
                      "subsets": len(r.tables), "in_main_tables": r.name not in self.hidden} for r in self.runs],
            "subsets": [record.as_json() for record in self.records],
            "table3": self.table3.as_json(),
            "rank_agreement": self.agreement.as_json(),
            "area": self.area.as_json(),
            "auroc_by_level": self.levels.as_json(),
            "normal_expansion": self.expansion.as_json(),
            "robustness": self.robustness.as_json(),
            "spend": [s.as_json() for s in self.spend],
            "variants": self.variants,
            "verdicts": self.verdicts,
            "skipped_runs": [str(folder) for folder in self.skipped],
        }


def comparable_pairs(runs: Sequence[Run]) -> list[tuple[Run, Run, list[str]]]:
    """(a, b, changes) for runs of the same kind that differ in 1-2 settings (prompt variants,
    models, repeats) under the same corruption: the pairs `mmad compare` verdicts are about.
    A pair whose corruption differs is left out, even when something else differs too: the
    corruption's effect is Table 5's business, and mixing it in would confound the verdict."""
    out = []
    described = [r for r in runs if r.info is not None]
    for i, a in enumerate(described):
        for b in described[i + 1:]:
            changes = setting_differences(a.info, b.info)
            corruption_differs = any(c.split(":", 1)[0] in CORRUPT_KEYS for c in changes)
            if (changes and not corruption_differs and len(changes) <= MAX_VARIANT_DIFFERENCES
                    and a.info.get("kind") == b.info.get("kind")):
                out.append((a, b, changes))
    return out


def variant_pairs(runs: Sequence[Run]) -> list[str]:
    """'a vs b: key: x -> y' for each of `comparable_pairs`."""
    return [f"{a.name} vs {b.name}: {'; '.join(changes)}" for a, b, changes in comparable_pairs(runs)]


def build_report(inputs: Sequence[Path], *, data_root: Path, masks_dir: Path | None = None, ties: str = "half",
                 prices: str | Path | None = None, verdicts: Sequence[str] | None = None,
                 title: str | None = None) -> ReportData:
    """Read the runs under `inputs` and compute every analysis. `verdicts`: lines from `mmad
    compare` to show in the report's comparison section (None = not computed)."""
    if masks_dir is not None and not masks_dir.is_dir():
        raise ConfigError(f"--masks {masks_dir}: no such folder")
    skipped: list[Path] = []
    runs = load_runs(inputs, data_root=data_root, skipped=skipped)
    records = evaluate_runs(runs, ties=ties)
    hidden = corrupted_variants(runs)
    main = [r for r in runs if r.name not in hidden]
    main_records = [r for r in records if r.run not in hidden]
    table = table3(main, main_records)
    return ReportData(
        title=title or f"mmad report: {len(runs)} run{'s' if len(runs) != 1 else ''}",
        inputs=[str(p) for p in inputs], ties=ties, runs=runs, records=records, hidden=hidden,
        table3=table, agreement=rank_agreement(table),
        area=area_analysis(main, data_root, masks_dir=masks_dir, ties=ties),
        levels=level_curves(main_records), expansion=expansion_curves(main, ties=ties),
        robustness=robustness_table(runs, records), spend=spend_table(runs, prices),
        variants=variant_pairs(runs), verdicts=list(verdicts) if verdicts is not None else None, skipped=skipped,
    )


def json_safe(value):
    """NaN -> None everywhere, so the output is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
