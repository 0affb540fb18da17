"""Which normal images go into a prompt as references.

Rules (`--reference-choice`):
  - `first` (default): the first k images of the sorted normal-train folder, the same for every
    query of a subset: what the reference scripts do. The prefix is identical across a subset, so
    prompt caching applies.
  - `random:SEED`: k images drawn once per subset with the seed (and the subset's name), the
    same for every query of the subset: a check that results do not hinge on which k.
  - `similar`: per query, the k normal images closest to it by a cheap descriptor: the image as
    32x32 grayscale, mean-centred and unit-normalised, plus its mean colour (cosine distance; ties
    by file name). Every query gets its own prefix, so prompt caching mostly does not apply (the
    estimate shows it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from mmad.data import datasets
from mmad.errors import ConfigError, DataError
from mmad.reading import open_file

RULES = ("first", "random", "similar")


def parse_rule(text: str | None) -> str:
    """Validate `first`, `random:SEED` or `similar`; returns the canonical text."""
    rule = (text or "first").strip()
    if rule in ("first", "similar"):
        return rule
    if rule.startswith("random:") and rule[7:].lstrip("-").isdigit():
        return f"random:{int(rule[7:])}"
    raise ConfigError(f"--reference-choice {text!r}: expected first, random:SEED or similar")


def descriptor(path: Path) -> np.ndarray:
    """32x32 grayscale (centred, unit norm) followed by the mean colour / 255."""
    with open_file(path) as handle, Image.open(handle) as image:
        image.draft("RGB", (64, 64))  # JPEG decodes at reduced size: fast
        rgb = image.convert("RGB")
        small = np.asarray(rgb.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64).ravel()
        colour = np.asarray(rgb.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float64).reshape(-1, 3).mean(0)
    small -= small.mean()
    norm = np.linalg.norm(small)
    return np.concatenate([small / norm if norm else small, colour / 255.0])


def _descriptors(paths: Sequence[Path], workers: int = 4) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.stack(list(pool.map(descriptor, paths))) if paths else np.zeros((0, 1027))


def pool_of(subset: datasets.Subset) -> list[Path]:
    if not subset.reference_dir.is_dir():
        raise DataError(f"{subset.label}: reference folder {subset.reference_dir} not found")
    return datasets.list_images(subset.reference_dir)


def choose(subset: datasets.Subset, k: int, rule: str, queries: Sequence[Path]) -> list[tuple[Path, ...]]:
    """The references of every query, in order (one tuple per query)."""
    if k == 0:
        return [()] * len(queries)
    if rule == "first":
        fixed = tuple(datasets.reference_images(subset, k))
        return [fixed] * len(queries)
    pool = pool_of(subset)
    if len(pool) < k:
        raise DataError(f"{subset.label}: {subset.reference_dir} holds {len(pool)} images; {k} references are needed")
    if rule.startswith("random:"):
        seed = int.from_bytes(hashlib.sha256(f"{rule}|{subset.label}".encode()).digest()[:8], "little")
        picked = np.random.default_rng(seed).choice(len(pool), size=k, replace=False)
        fixed = tuple(pool[i] for i in sorted(picked))
        return [fixed] * len(queries)
    normal = _descriptors(pool)
    asked = _descriptors(list(queries))
    grey = slice(0, 1024)
    similarity = asked[:, grey] @ normal[:, grey].T - 0.5 * np.linalg.norm(
        asked[:, None, 1024:] - normal[None, :, 1024:], axis=2)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return [tuple(pool[i] for i in row) for row in order]
