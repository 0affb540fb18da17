"""Anomalous area as severity (RQ3, Table 4): do scores follow the defect's size instead of its risk?

Masks are found beside the test images in the MVTec AD / VisA convention: for
`<subset dir>/test/<folder>/<name>.<ext>` the mask is `<subset dir>/ground_truth/<folder>/<name>_mask.png`
(`<name>.png` there is accepted too); with `--masks DIR`, `DIR/<dataset>/<subset>/<folder>/...`,
`DIR/<subset>/<folder>/...` and `DIR/<folder>/...` are tried first, in that order.

Area: the mask is resized to a width of 256 px keeping the aspect ratio (the paper's rule), with
**nearest-neighbour** resampling so that it stays binary, and the pixels > 0 are counted.

Area-based levels: level 0 stays normal; the anomalous images of a subset that have a mask are
put into K equal-frequency bins by area, K = the number of anomalous risk levels of the subset:
level = floor((r - 0.5) * K / n) + 1, r = the image's rank by area among the n images (1 =
smallest). **Ties get the mean of their ranks**, so equal areas always share a level: a tied
block goes to the bin holding its mean rank (a mean exactly on a bin edge goes to the upper bin).
The bins depend on the data only, never on a run's failures.

Per run and subset the report gives the C-index under risk-based and area-based levels on the
same rows (normal rows plus anomalous rows with a mask and a score), and Spearman's rho between
area and score over the anomalous rows (is a bigger defect scored higher?).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from mmad import metrics
from mmad.analysis.runs import Run
from mmad.data.datasets import Subset, resolve
from mmad.errors import DataError
from mmad.reading import open_file
from mmad.results.files import ResultTable

MASK_WIDTH = 256
RESAMPLING = Image.Resampling.NEAREST


def mask_candidates(subset: Subset, rel: str, masks_dir: Path | None = None) -> list[Path]:
    """Where the mask of test image `rel` may be, in the order tried."""
    path = PurePosixPath(rel)
    names = (f"{path.stem}_mask.png", f"{path.stem}.png")
    bases = [masks_dir / subset.dataset / subset.subset, masks_dir / subset.subset, masks_dir] if masks_dir else []
    test_root = subset.test_root
    bases.append(test_root.parent / "ground_truth" if test_root.name == "test" else test_root / "ground_truth")
    return [base / str(path.parent) / name for base in bases for name in names]


def mask_area(path: Path) -> int:
    """Pixels > 0 after resizing to width 256 (aspect kept, nearest neighbour)."""
    try:
        with open_file(path) as image_file, Image.open(image_file) as image:
            mask = image.convert("L")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable mask ({exc})") from None
    width, height = mask.size
    resized = mask.resize((MASK_WIDTH, max(1, round(height * MASK_WIDTH / width))), RESAMPLING)
    return int((np.asarray(resized) > 0).sum())


def area_levels(areas: np.ndarray, n_levels: int) -> np.ndarray:
    """Equal-frequency levels 1..n_levels by area; equal areas share a level (module docstring)."""
    from scipy.stats import rankdata

    areas = np.asarray(areas, dtype=float)
    if areas.size == 0:
        return np.zeros(0, dtype=np.int64)
    ranks = rankdata(areas, method="average")
    return (np.floor((ranks - 0.5) * n_levels / areas.size) + 1).astype(np.int64).clip(1, n_levels)


@dataclass(frozen=True)
class SubsetAreas:
    """Area and area-based level per test image of one subset (None = anomalous without a mask)."""

    area: dict[str, int | None]
    level: dict[str, int]  # area-based level of every image with a known area (0 = normal)

    @property
    def masks_found(self) -> int:
        return sum(1 for rel, a in self.area.items() if a is not None and self.level[rel] > 0)


def subset_areas(subset: Subset, paths: Sequence[str], risk_levels: np.ndarray,
                 masks_dir: Path | None = None) -> SubsetAreas:
    area: dict[str, int | None] = {}
    for rel, level in zip(paths, risk_levels):
        if level == 0:
            area[rel] = 0
            continue
        found = next((p for p in mask_candidates(subset, rel, masks_dir) if p.is_file()), None)
        area[rel] = mask_area(found) if found else None
    anomalous = [rel for rel, level in zip(paths, risk_levels) if level > 0 and area[rel] is not None]
    n_levels = len({int(lv) for lv in risk_levels if lv > 0})
    binned = area_levels(np.array([area[rel] for rel in anomalous]), n_levels)
    levels = {rel: 0 for rel, lv in zip(paths, risk_levels) if lv == 0}
    levels.update(zip(anomalous, (int(b) for b in binned)))
    return SubsetAreas(area, levels)


@dataclass(frozen=True)
class AreaRecord:
    """One run on one subset: C-index by risk and by area on the same rows, rho(area, score)."""

    run: str
    dataset: str
    subset: str
    n: int  # rows compared: normal + anomalous with a mask and a score
    anomalous: int  # anomalous rows among them
    masks_missing: int  # anomalous images of the subset without a mask (left out)
    c_risk: float
    c_area: float
    spearman_area_score: float


@dataclass(frozen=True)
class AreaTable:
    records: list[AreaRecord]
    without_masks: list[str] = field(default_factory=list)  # "dataset/subset" with no mask at all
    without_data: list[str] = field(default_factory=list)  # subsets whose images are not under the root
    # (run, dataset) -> (area, score, risk level) of the anomalous rows compared, for the figure
    points: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def by_dataset(self) -> dict[str, dict[str, dict[str, float]]]:
        """run -> dataset -> {c_risk, c_area, spearman_area_score, subsets}: means over subsets."""
        grouped: dict[tuple[str, str], list[AreaRecord]] = {}
        for record in self.records:
            grouped.setdefault((record.run, record.dataset), []).append(record)
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (run, dataset), group in grouped.items():
            values = {key: _nanmean([getattr(r, key) for r in group])
                      for key in ("c_risk", "c_area", "spearman_area_score")}
            values["subsets"] = len(group)
            out.setdefault(run, {})[dataset] = values
        return out

    def as_json(self) -> dict:
        clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
        return {"mask_width": MASK_WIDTH, "resampling": "nearest",
                "records": [{k: clean(v) for k, v in asdict(r).items()} for r in self.records],
                "by_dataset": {run: {d: {k: clean(v) for k, v in vals.items()} for d, vals in by_d.items()}
                               for run, by_d in self.by_dataset().items()},
                "subsets_without_masks": self.without_masks, "subsets_without_data": self.without_data}


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def area_analysis(runs: Sequence[Run], data_root: Path, *, masks_dir: Path | None = None,
                  ties: str = "half") -> AreaTable:
    """Table 4 data for every run and subset whose test images have masks."""
    cache: dict[tuple[str, str], SubsetAreas | None] = {}
    records: list[AreaRecord] = []
    without_masks: list[str] = []
    without_data: list[str] = []
    points: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for run in runs:
        for table in run.tables:
            key = (table.dataset, table.subset)
            if key not in cache:
                cache[key] = _areas_for(table, data_root, masks_dir, without_masks, without_data)
            areas = cache[key]
            if areas is not None:
                record, rows = _record(run.name, table, areas, ties)
                records.append(record)
                points.setdefault((run.name, table.dataset), []).append(rows)
    merged = {key: (np.concatenate([a for a, _, _ in chunks]), np.concatenate([s for _, s, _ in chunks]),
                    np.concatenate([r for _, _, r in chunks])) for key, chunks in points.items()}
    return AreaTable(records, without_masks, without_data, merged)


def _areas_for(table: ResultTable, root: Path, masks_dir: Path | None, without_masks: list[str],
               without_data: list[str]) -> SubsetAreas | None:
    label = f"{table.dataset}/{table.subset}"
    try:
        subset = resolve(root, table.dataset, table.subset)[0]
    except DataError:
        without_data.append(label)
        return None
    if not subset.test_root.is_dir() and masks_dir is None:
        without_data.append(label)
        return None
    areas = subset_areas(subset, table.paths, metrics.severity_levels(table.severity), masks_dir)
    if areas.masks_found == 0:
        without_masks.append(label)
        return None
    return areas


def _record(run: str, table: ResultTable, areas: SubsetAreas,
            ties: str) -> tuple[AreaRecord, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from scipy.stats import spearmanr

    risk = metrics.severity_levels(table.severity)
    keep = np.array([rel in areas.level and not math.isnan(s) for rel, s in zip(table.paths, table.scores)])
    paths = [rel for rel, k in zip(table.paths, keep) if k]
    scores, risk = table.scores[keep], risk[keep]
    by_area = np.array([areas.level[rel] for rel in paths], dtype=np.int64)
    size = np.array([areas.area[rel] for rel in paths], dtype=float)
    anomalous = risk > 0
    missing = sum(1 for rel, lv in zip(table.paths, metrics.severity_levels(table.severity))
                  if lv > 0 and areas.area.get(rel) is None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined cases come out NaN, by design
        c_risk = metrics.c_index(risk, scores, ties=ties)
        c_area = metrics.c_index(by_area, scores, ties=ties)
        rho = (float(spearmanr(size[anomalous], scores[anomalous]).statistic)
               if anomalous.sum() >= 3 else math.nan)
    record = AreaRecord(run, table.dataset, table.subset, int(keep.sum()), int(anomalous.sum()), missing,
                        c_risk, c_area, rho)
    return record, (size[anomalous], scores[anomalous], risk[anomalous])
