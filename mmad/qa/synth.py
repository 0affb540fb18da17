"""A generated set in the MMAD-QA format whose answers are known by construction.

scikit-image's bundled textures (brick, grass, gravel) are the products, in two datasets
(`Synth-Textures`: brick, grass; `Synth-Gravel`: gravel, whose images are 640x400 so that the
512x512 fitting is exercised). Per category: normal training crops (the templates), normal test
images (path contains `good`: Anomaly Detection answer "No" plus the object questions) and
defective ones with a dark or bright *spot* or *scratch* placed in a known region, so all seven
subtasks have a known answer. Options are shuffled with the seed, so correct letters vary.
`random_templates` are drawn with the seed; `similar_templates` are the training images
closest in mean intensity to the query. `domain_knowledge.json` describes each category.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata
from skimage import draw

from mmad.qa.data import write_annotation

DATASETS = {"Synth-Textures": ("brick", "grass"), "Synth-Gravel": ("gravel",)}
PRODUCTS = {"brick": "Brick wall", "grass": "Grass lawn", "gravel": "Gravel bed", "wood": "Wooden board"}
SURFACES = {"brick": "Rows of rectangular blocks separated by mortar lines",
            "grass": "Dense thin blades of grass", "gravel": "Many small loose stones",
            "wood": "Smooth polished metal plate"}  # the last one is never right: a distractor
STRUCTURE_TYPE = {"brick": "Object Structure", "grass": "Object Details", "gravel": "Object Details"}
LOCATIONS = {"top left": (0.25, 0.25), "top right": (0.25, 0.75), "bottom left": (0.75, 0.25),
             "bottom right": (0.75, 0.75), "center": (0.5, 0.5)}
DEFECTS = ("spot", "scratch")
LOOKS = {("spot", "dark"): "A dark round spot", ("spot", "bright"): "A bright round spot",
         ("scratch", "dark"): "A thin dark line", ("scratch", "bright"): "A thin bright line"}
EFFECTS = {"spot": "Discolouration that spoils the look of the surface",
           "scratch": "A groove that weakens the surface layer"}
EFFECT_DISTRACTORS = ("The product will not switch on", "Liquid will leak out of it")
SIZES = {"Synth-Textures": (256, 256), "Synth-Gravel": (640, 400)}  # (width, height)


def _question(rng, text: str, subtask: str, right: str, wrong: list[str]) -> dict:
    choices = [right] + [w for w in wrong if w != right]
    order = rng.permutation(len(choices))
    letters = "ABCDE"
    options = {letters[i]: choices[j] for i, j in enumerate(order)}
    answer = next(letter for letter, value in options.items() if value == right)
    return {"Question": text, "Options": options, "Answer": answer, "type": subtask}


def _crop(texture: np.ndarray, size: tuple[int, int], rng) -> np.ndarray:
    side = 200
    y, x = rng.integers(0, texture.shape[0] - side), rng.integers(0, texture.shape[1] - side)
    patch = Image.fromarray(texture[y:y + side, x:x + side].astype(np.uint8))
    return np.asarray(patch.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)


def _defect(image: np.ndarray, kind: str, tone: str, location: str, rng) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape
    cy, cx = LOCATIONS[location][0] * height, LOCATIONS[location][1] * width
    mask = np.zeros(image.shape, dtype=bool)
    if kind == "spot":
        rr, cc = draw.ellipse(cy, cx, 0.08 * height, 0.08 * width, shape=image.shape)
        mask[rr, cc] = True
    else:
        half = 0.12 * min(height, width)
        angle = rng.uniform(0, np.pi)
        r0, c0 = int(cy - half * np.sin(angle)), int(cx - half * np.cos(angle))
        r1, c1 = int(cy + half * np.sin(angle)), int(cx + half * np.cos(angle))
        for offset in range(3):
            rr, cc = draw.line(r0 + offset, c0, r1 + offset, c1)
            keep = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
            mask[rr[keep], cc[keep]] = True
    out = image.copy()
    out[mask] = 15.0 if tone == "dark" else 245.0
    return out, mask


def _save(array: np.ndarray, path: Path, tint) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([array * t for t in tint], axis=-1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)


def _conversation(rng, category: str, defect: tuple[str, str, str] | None) -> list[dict]:
    questions = [_question(rng, "Is there any defect in the object?", "Anomaly Detection",
                           "Yes" if defect else "No", ["Yes", "No"])]
    if defect:
        kind, tone, location = defect
        prefix = "There is a defect in the object. "
        questions += [
            _question(rng, prefix + "What is the type of the defect?", "Defect Classification", kind,
                      ["spot", "scratch", "crack", "hole"]),
            _question(rng, prefix + "Where is the defect?", "Defect Localization", location, list(LOCATIONS)),
            _question(rng, prefix + "What does the defect look like?", "Defect Description", LOOKS[kind, tone],
                      list(LOOKS.values())),
            _question(rng, prefix + "What effect might this defect have on the product?", "Defect Analysis",
                      EFFECTS[kind], [*EFFECTS.values(), *EFFECT_DISTRACTORS])]
    questions += [
        _question(rng, "What kind of product is shown in the image?", "Object Classification", PRODUCTS[category],
                  list(PRODUCTS.values())),
        _question(rng, "What does the surface of the object look like?", STRUCTURE_TYPE[category],
                  SURFACES[category], list(SURFACES.values()))]
    return questions


def synthesize_qa(root: Path, *, normal: int = 4, defective: int = 6, train: int = 6, seed: int = 0) -> Path:
    """Write images, mmad.json and domain_knowledge.json under `root`; returns mmad.json's path."""
    entries: dict[str, dict] = {}
    knowledge: dict[str, dict] = {}
    for d_index, (dataset, categories) in enumerate(DATASETS.items()):
        size = SIZES[dataset]
        for c_index, category in enumerate(categories):
            rng = np.random.default_rng(seed * 1000 + d_index * 10 + c_index)
            texture = np.asarray(getattr(skdata, category)(), dtype=np.float64)
            tint = tuple(float(t) for t in rng.uniform(0.8, 1.1, 3))
            base = f"{dataset}/{category}"
            train_paths, train_means = [], []
            for i in range(train):
                image = _crop(texture, size, rng)
                rel = f"{base}/train/good/{i:03d}.png"
                _save(image, root / rel, tint)
                train_paths.append(rel)
                train_means.append(image.mean())
            knowledge.setdefault(dataset, {})[category] = {
                "good": f"A normal {PRODUCTS[category].lower()}: {SURFACES[category].lower()}, no marks.",
                "spot": "spot: a round patch much darker or brighter than the surface around it.",
                "scratch": "scratch: a thin straight line much darker or brighter than the surface."}
            for i in range(normal + defective):
                image = _crop(texture, size, rng)
                defect = None
                if i >= normal:
                    defect = (DEFECTS[i % 2], ("dark", "bright")[(i // 2) % 2], list(LOCATIONS)[i % len(LOCATIONS)])
                    image, mask = _defect(image, *defect, rng)
                    rel = f"{base}/test/{defect[0]}/{i:03d}.png"
                    mask_rel = f"{base}/ground_truth/{defect[0]}/{i:03d}_mask.png"
                    (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(root / mask_rel)
                else:
                    rel, mask_rel = f"{base}/test/good/{i:03d}.png", None
                _save(image, root / rel, tint)
                closest = np.argsort(np.abs(np.array(train_means) - image.mean()), kind="stable")[:3]
                entries[rel] = {"conversation": _conversation(rng, category, defect), "mask_path": mask_rel,
                                "similar_templates": [train_paths[j] for j in closest],
                                "random_templates": [train_paths[j] for j in rng.choice(train, 3, replace=False)]}
    return write_annotation(root, entries, knowledge)
