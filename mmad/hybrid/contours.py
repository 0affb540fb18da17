"""The region a detector flagged, drawn on the query as a red contour (VELM's conditioning image).

Rule, for one image: its patch-grid map is upsampled bilinearly to the query's own resolution
(the detector resized the whole image to a square without cropping, so the grid covers the whole
image); the region is every pixel whose upsampled value is above the gate threshold t
(mmad.hybrid.gate: by default the largest image score of the held-out normals, i.e. "more anomalous than
any patch of a normal image"); holes inside a region are filled, so only its external outline is
drawn: the region's pixels within 2 px of its outside (an image edge counts as outside), in pure
red (255, 0, 0), on the query at full resolution. If no upsampled pixel exceeds t although the
image score does (interpolation and float16 rounding can flatten a one-patch peak), the pixels at
the map's maximum are outlined instead; an image below t gets no contour.

A rendered image is a PNG file named by what it depends on (the query's sha256, the map's digest,
the threshold, the drawing rule's version), written once and reused: its own sha256 then
identifies it in the response cache like any image. numpy, Pillow and scikit-image only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from skimage.measure import label

from mmad.reading import open_file, read_bytes

RED = (255, 0, 0)
WIDTH = 2
RULE_VERSION = 1
T = TypeVar("T")


def upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """A patch grid resized bilinearly (pixel-centre aligned) to width x height, as float32."""
    image = Image.fromarray(np.ascontiguousarray(grid, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def detected_region(grid: np.ndarray, width: int, height: int, threshold: float) -> np.ndarray:
    """Boolean mask of the pixels above `threshold` (see the module docstring for the fallback)."""
    values = upsample(grid, width, height)
    region = values > threshold
    if not region.any() and float(np.max(grid)) >= threshold:
        region = values >= values.max()
    return region


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every enclosed background component filled (only outer outlines remain).
    Holes lie inside the region's bounding box, so only that box is labelled."""
    if not mask.any():
        return mask.copy()
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    labels = label(np.pad(~mask[box], 1, constant_values=True), connectivity=1)
    filled = mask.copy()
    filled[box] = labels[1:-1, 1:-1] != labels[0, 0]
    return filled


def outline(mask: np.ndarray, width: int = WIDTH) -> np.ndarray:
    """The pixels of the filled mask within `width` px (chessboard distance) of its outside."""
    filled = fill_holes(mask)
    padded = np.pad(filled, width, constant_values=False)
    eroded = np.ones_like(filled)
    rows, cols = filled.shape
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            eroded &= padded[dy:dy + rows, dx:dx + cols]
    return filled & ~eroded


def draw(query: Image.Image, band: np.ndarray) -> Image.Image:
    """The query (as RGB) with `band` painted red."""
    pixels = np.array(query.convert("RGB"))
    pixels[band] = RED
    return Image.fromarray(pixels)


def contour_name(query_sha256: str, map_digest: str, threshold: float) -> str:
    material = f"contour-v{RULE_VERSION}|{WIDTH}|{RED}|{query_sha256}|{map_digest}|{float(threshold)!r}"
    return hashlib.sha256(material.encode()).hexdigest() + ".png"


@dataclass(frozen=True)
class ContourImage:
    path: Path
    sha256: str  # of the PNG file
    pixels: int | None  # red pixels drawn (0: nothing above the threshold); None when reused unread


def contour_png(query: Path, grid: np.ndarray, threshold: float) -> tuple[bytes, int]:
    """(PNG bytes of the query with the detected region's contour, red pixels drawn)."""
    import io
    with open_file(query) as image_file, Image.open(image_file) as image:
        image.load()
        band = outline(detected_region(grid, image.width, image.height, threshold))
        drawn = draw(image, band)
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG", compress_level=1)  # lossless; fixed: the bytes are its identity
    return buffer.getvalue(), int(band.sum())


def render(query: Path, grid: np.ndarray, threshold: float, folder: Path, *, query_sha256: str,
           map_digest: str) -> ContourImage:
    """Write (once) the query with the detected region's contour under a name made of its inputs;
    returns the PNG and its digest."""
    path = Path(folder) / contour_name(query_sha256, map_digest, threshold)
    if path.is_file():
        return ContourImage(path, hashlib.sha256(read_bytes(path)).hexdigest(), None)
    data, pixels = contour_png(query, grid, threshold)
    write_bytes_atomic(path, data)
    return ContourImage(path, hashlib.sha256(data).hexdigest(), pixels)


@dataclass(frozen=True)
class ContourRequest:
    """One image to render: its file, map, threshold and identities."""

    query: Path
    grid: np.ndarray
    threshold: float
    query_sha256: str
    map_digest: str


def render_many(requests: list[ContourRequest], folder: Path, workers: int = 4) -> list[ContourImage | OSError]:
    """`render` for many images on worker threads; an image that cannot be read comes back as its
    OSError, in order."""
    return map_renders(lambda item: render(item.query, item.grid, item.threshold, folder,
                                           query_sha256=item.query_sha256, map_digest=item.map_digest),
                       requests, workers)


def map_renders(draw: Callable[[T], ContourImage], items: list[T], workers: int) -> list[ContourImage | OSError]:
    """`draw` each item on worker threads (Pillow releases the GIL while decoding and encoding);
    an OSError comes back in the item's place, in order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item: T) -> ContourImage | OSError:
        try:
            return draw(item)
        except OSError as exc:
            return exc
    if len(items) <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
