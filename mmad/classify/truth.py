"""Ground truth: the defect type(s) of a test image, from its folder name.

  - MAD-Bench industrial templates: the first folder of the template path, before `_level_<k>`
    (`cut_level_3/007.png` -> cut); a comma joins several types (`"melt,scratch_level_2/..."`
    -> melt and scratch); `good_level_0` -> good (the normal class).
  - MVTec-AC / VisA-AC layout: `<root>/<dataset>/<category>/test/<type>/<image>`, normal
    references in `<category>/train/good/`; the type is the folder name (`good` = normal). A
    dataset is read in this layout when `<root>/<dataset>/` holds category folders with a `test/`
    folder and no MAD-Bench template names it.

Multi-type images (decided here, used by scores.effective_truth): a prediction of any of the
image's types is correct; in the confusion matrix such an image is counted under the predicted
type when it is one of them, else under its first listed type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmad.classify.classes import NORMAL
from mmad.data import datasets
from mmad.errors import DataError

LEVEL_FOLDER = re.compile(r"^(?P<types>.+)_level_\d+(?:\.\d+)?$")


def true_classes(rel: str) -> tuple[str, ...]:
    """The type(s) of one image from its path (see the module docstring)."""
    folder = rel.replace("\\", "/").split("/")[0].strip().strip('"').strip()
    match = LEVEL_FOLDER.match(folder)
    name = match.group("types") if match else folder
    types = tuple(dict.fromkeys(t.strip() for t in name.split(",") if t.strip()))
    if not types or len(rel.replace("\\", "/").split("/")) < 2:
        raise DataError(f"{rel!r}: cannot tell the defect type (expected <type>_level_<k>/<image> or <type>/<image>)")
    return types


@dataclass(frozen=True)
class Item:
    """One test image to classify."""

    path: str  # relative to the subset's test root
    severity: float | None
    truth: tuple[str, ...]  # canonical class names (or ("good",))

    @property
    def normal(self) -> bool:
        return self.truth == (NORMAL,)


def folder_layout_subsets(root: Path, dataset: str, subset: str | None) -> list[datasets.Subset] | None:
    """The categories of a MVTec-AC / VisA-AC style dataset, or None when `<root>/<dataset>` is not one."""
    base = Path(root) / dataset
    if not base.is_dir():
        return None
    categories = sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "test").is_dir())
    if not categories:
        return None
    if subset is not None:
        if subset not in categories:
            raise DataError(f"{base}: no category {subset!r} (has: {', '.join(categories)})")
        categories = [subset]
    return [datasets.Subset(dataset, name, "Industry", "industrial", datasets.industrial_subject(name),
                            base / name / "(folder layout: no template)", base / name / "test",
                            base / name / "train" / "good") for name in categories]


def folder_layout_items(subset: datasets.Subset) -> list[tuple[str, float | None]]:
    """(path relative to test/, severity None) for every image under test/<type>/, sorted."""
    rows: list[tuple[str, float | None]] = []
    for folder in sorted(p for p in subset.test_root.iterdir() if p.is_dir()):
        for image in datasets.list_images(folder):
            rows.append((f"{folder.name}/{image.name}", None))
    if not rows:
        raise DataError(f"{subset.test_root}: no images in <type>/ folders")
    return rows


def load_items(subset: datasets.Subset, class_names: tuple[str, ...], *, folder_layout: bool) -> list[Item]:
    """Every test image of a subset with its canonical true class(es); a type the class file does
    not list is a one-line error naming the row."""
    if folder_layout:
        rows = folder_layout_items(subset)
        source = subset.test_root
    else:
        template = datasets.load_subset(subset)
        rows = list(zip(template.paths, (float(s) for s in np.asarray(template.severity))))
        source = subset.template_path
    canonical = {name.lower(): name for name in class_names}
    canonical[NORMAL] = NORMAL
    items = []
    for line, (rel, severity) in enumerate(rows, start=2):
        types = true_classes(rel)
        unknown = [t for t in types if t.lower() not in canonical]
        if unknown:
            where = f"line {line}" if not folder_layout else rel
            raise DataError(f"{source}: {where}: defect type {unknown[0]!r} of {rel!r} is not among the classes "
                            f"{', '.join(class_names)} of the class descriptions; add it there")
        items.append(Item(rel, severity, tuple(canonical[t.lower()] for t in types)))
    return items
