"""Contour images as VELM draws them (`create_contour.py`), from a ground-truth mask or a detector map.

Both at 448 px, the size VELM sends: the query is opened with Pillow and resized to 448x448
(Pillow's default resampling; a grayscale image becomes 3 equal channels, as VELM's
`cv2.cvtColor(GRAY2BGR)`); the region is drawn with OpenCV's external contours
(`findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)`) in red (255, 0, 0), 2 px wide.

  - `masks` (VELM's source): the dataset's ground-truth mask, resized to 448x448 the same way and
    binarised as VELM does: > 127 for MVTec-style masks (`ground_truth/<type>/<name>_mask.png`),
    > 0 for VisA-style ones (`groundtruth/<type>/<name>.png`). A normal image has no mask: its
    region is empty (no contour).
  - `detector`: the detector's patch map upsampled bilinearly to 448x448 (mmad.hybrid.contours.upsample),
    region = values above the gate threshold (with mmad.hybrid.contours' fallback to the map's maximum).

Never a contour below a visible minimum: a connected region whose bounding box is smaller than
`MIN_SIDE` px (at 448) is replaced by a disc of that diameter on its centre before the contours
are found, so a one-pixel region is drawn as a 12 px ring, not a red dot. (VELM draws masks as
they are; real ground-truth regions are larger than this, so it changes nothing there.)

VELM saves its drawing through matplotlib (`plt.savefig`, a resampled figure) and resizes that
file to 448 again before sending; mmad sends the 448 px drawing itself (the same contour, without
the two resamplings). A rendered image is a PNG named by what it depends on and reused.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from mmad.hybrid.contours import ContourImage, detected_region, map_renders, write_bytes_atomic
from mmad.reading import open_file, read_bytes

SIDE = 448
RED = (255, 0, 0)
WIDTH = 2
MIN_SIDE = 12
RULE_VERSION = 1
MASK_RULES = {"ground_truth": ("{stem}_mask.png", 127), "groundtruth": ("{stem}.png", 0)}  # folder: (name, >)


def find_mask(subset_dir: Path, rel: str) -> tuple[Path, int] | None:
    """(mask file, binarisation threshold) of a test image `<type>/<name>` under the category's
    folder, MVTec style first; None when there is none."""
    folder, _, name = rel.replace("\\", "/").rpartition("/")
    stem = Path(name).stem
    for mask_folder, (pattern, threshold) in MASK_RULES.items():
        path = subset_dir / mask_folder / folder / pattern.format(stem=stem)
        if path.is_file():
            return path, threshold
    return None


def _resized(path: Path) -> np.ndarray:
    with open_file(path) as image_file, Image.open(image_file) as image:
        return np.array(image.resize((SIDE, SIDE)))


def mask_region(mask: Path, threshold: int) -> np.ndarray:
    """A ground-truth mask at 448 px, binarised as VELM does (> threshold), as 0/255 uint8."""
    values = _resized(mask)
    if values.ndim == 3:  # VELM's masks are single-channel; a colour mask counts by its first channel
        values = values[..., 0]
    return np.where(values > threshold, 255, 0).astype(np.uint8)


def detector_region(grid: np.ndarray, threshold: float) -> np.ndarray:
    return np.where(detected_region(grid, SIDE, SIDE, threshold), 255, 0).astype(np.uint8)


def with_minimum(region: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Regions smaller than `min_side` (bounding box) replaced by a disc of that diameter on their centre."""
    import cv2
    count, labels, stats, centroids = cv2.connectedComponentsWithStats((region > 0).astype(np.uint8), connectivity=8)
    out = region.copy()
    for index in range(1, count):
        if max(stats[index, cv2.CC_STAT_WIDTH], stats[index, cv2.CC_STAT_HEIGHT]) < min_side:
            centre = tuple(int(round(v)) for v in centroids[index])
            cv2.circle(out, centre, min_side // 2, 255, thickness=-1)
    return out


def draw(query: Path, region: np.ndarray) -> tuple[np.ndarray, int]:
    """(the 448 px query with the region's external contours in red, contour count)."""
    import cv2
    pixels = _resized(query)
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(with_minimum(region), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(pixels.copy(), contours, -1, RED, WIDTH), len(contours)


def contour_png(query: Path, region: np.ndarray) -> tuple[bytes, int]:
    drawn, _ = draw(query, region)
    buffer = io.BytesIO()
    Image.fromarray(drawn).save(buffer, format="PNG", compress_level=1)  # lossless; fixed: the bytes are its identity
    return buffer.getvalue(), int(np.all(drawn == RED, axis=-1).sum()) if drawn.shape[-1] == 3 else 0


def render(query: Path, region_of, folder: Path, identity: str) -> ContourImage:
    """Write (once) the query with its contour under a name made of `identity` (what the region
    depends on); `region_of()` computes the region only when the file is not there yet."""
    material = f"velm-contour-v{RULE_VERSION}|{SIDE}|{WIDTH}|{RED}|{MIN_SIDE}|{identity}"
    path = Path(folder) / (hashlib.sha256(material.encode()).hexdigest() + ".png")
    if path.is_file():
        return ContourImage(path, hashlib.sha256(read_bytes(path)).hexdigest(), None)
    data, pixels = contour_png(query, region_of())
    write_bytes_atomic(path, data)
    return ContourImage(path, hashlib.sha256(data).hexdigest(), pixels)


def render_many(items: list[tuple[Path, object, str]], folder: Path, workers: int = 4) -> list[ContourImage | OSError]:
    """`render` for many (query, region_of, identity) on worker threads; an image that cannot be
    read comes back as its OSError, in order."""
    return map_renders(lambda item: render(item[0], item[1], folder, item[2]), items, workers)
