"""An offline demo dataset in the MAD-Bench layout: real textures with graded synthetic defects.

scikit-image ships the brick, grass and gravel textures inside its wheel, so this needs no network.
Each subset gets normal training crops, and test crops at levels 0-3 whose defect grows in size
and contrast with the level. Defects come in types, named like MAD-Bench's industrial template
folders, `<type>_level_<k>/` (the type is the folder name before `_level_`; a comma joins several
types in one image, as in VisA's `"melt,scratch_level_2"`):

  - `blotch`: an elliptical patch of shifted intensity;
  - `scratch`: a straight line, white on a dark patch or black on a light one, longer and
    thicker with the level;
  - `blotch,scratch`: both at once (the blotch with a scratch through it).

Test images cycle through the types (image i of a level gets type i mod 3). Every defect's
pixels are written as a ground-truth mask in the MVTec/VisA convention,
`<subset>/ground_truth/<folder>/<name>_mask.png` (0 / 255), so the area analysis of
`mmad report` (paper RQ3) runs offline; normal images get no mask, as in MVTec AD. The class
descriptions of these types ship as `mmad/assets/classify/classes/synth.toml`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata
from skimage import draw

from mmad.data.templates import write_result_csv

TEXTURES = ("brick", "grass", "gravel")
DATASET = "synth"
LEVELS = 4
DEFECT_TYPES = ("blotch", "scratch", "blotch,scratch")
# Defect radius range (fraction of the image side) and contrast per level.
DEFECT = {1: (0.04, 0.06, 45), 2: (0.09, 0.12, 70), 3: (0.16, 0.22, 95)}


def _texture(name: str) -> np.ndarray:
    return np.asarray(getattr(skdata, name)(), dtype=np.uint8)


def _crop(texture: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = rng.integers(0, texture.shape[0] - size), rng.integers(0, texture.shape[1] - size)
    return texture[y:y + size, x:x + size].astype(np.float64)


def _add_defect(image: np.ndarray, level: int, rng: np.random.Generator, kind: str = "blotch,scratch") -> np.ndarray:
    return _defect_with_mask(image, level, rng, kind)[0]


def _defect_with_mask(image: np.ndarray, level: int, rng: np.random.Generator,
                      kind: str = "blotch,scratch") -> tuple[np.ndarray, np.ndarray]:
    """The image with a defect of `kind` (see DEFECT_TYPES), and the defect's pixels as a boolean
    mask. Every type draws the same random numbers, so the placement does not depend on it."""
    if kind not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {kind!r}; expected one of {', '.join(DEFECT_TYPES)}")
    size = image.shape[0]
    mask = np.zeros(image.shape, dtype=bool)
    low, high, contrast = DEFECT[level]
    radius = rng.uniform(low, high) * size
    cy, cx = rng.uniform(radius, size - radius, 2)
    sign = rng.choice((-1.0, 1.0))
    rr, cc = draw.ellipse(cy, cx, radius, radius * rng.uniform(0.5, 1.0), shape=image.shape,
                          rotation=rng.uniform(0, np.pi))
    angle = rng.uniform(0, np.pi)
    out = image.copy()
    if "blotch" in kind:
        out[rr, cc] = out[rr, cc] * 0.5 + (128 + sign * contrast)
        mask[rr, cc] = True
    if "scratch" in kind:
        length = radius * (2.2 if "blotch" in kind else 3.0)
        r0, c0 = cy - np.sin(angle) * length / 2, cx - np.cos(angle) * length / 2
        r1, c1 = cy + np.sin(angle) * length / 2, cx + np.cos(angle) * length / 2
        lr, lc = draw.line(*(int(np.clip(v, 0, size - 1)) for v in (r0, c0, r1, c1)))
        # alone, a scratch is drawn against the texture: black on light ground, white on dark
        value = (255 if sign < 0 else 0) if "blotch" in kind else (0 if image[rr, cc].mean() > 127 else 255)
        for offset in range(max(1, level)):
            rows = np.clip(lr + offset, 0, size - 1)
            out[rows, lc] = value
            mask[rows, lc] = True
    return np.clip(out, 0, 255), mask


def _save(array: np.ndarray, path: Path, tint: tuple[float, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([array * t for t in tint], axis=-1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)


def _save_mask(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)  # 2-D uint8 = mode L


def defect_folder(kind: str, level: int) -> str:
    """`good_level_0` for normal images, else `<type>_level_<k>` as in MAD-Bench's templates."""
    return "good_level_0" if level == 0 else f"{kind}_level_{level}"


def synthesize(root: Path, *, train: int = 20, per_level: int = 10, size: int = 224,
               seed: int = 0, textures: tuple[str, ...] = TEXTURES) -> list[Path]:
    """Write the demo dataset `synth` under `root`; returns the template files written."""
    templates = []
    for index, name in enumerate(textures):
        rng = np.random.default_rng(seed * 1000 + index)
        texture = _texture(name)
        tint = tuple(float(t) for t in rng.uniform(0.8, 1.1, 3))
        base = root / "Industry" / DATASET / name
        for i in range(train):
            _save(_crop(texture, size, rng), base / "train" / "good" / f"{i:03d}.png", tint)
        rows = []
        for level in range(LEVELS):
            for i in range(per_level):
                kind = DEFECT_TYPES[i % len(DEFECT_TYPES)]
                folder = defect_folder(kind, level)
                image = _crop(texture, size, rng)
                rel = f"{folder}/{i:03d}.png"
                if level:
                    image, mask = _defect_with_mask(image, level, rng, kind)
                    _save_mask(mask, base / "ground_truth" / folder / f"{i:03d}_mask.png")
                _save(image, base / "test" / rel, tint)
                rows.append((rel, float(level), None))
        template = root / "template" / f"{DATASET}_{name}_template.csv"
        write_result_csv(template, rows)
        templates.append(template)
    return templates
