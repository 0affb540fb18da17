"""Images as the sister benchmarks' scripts prepare them (`ImageSpec.recipe`), so the bytes match.

  - `mmad-qa` (MMAD's `gpt4o.py`): `cv2.imread` (BGR, 8 bit, 3 channels), scale =
    min(512 / w, 512 / h) — also above 1, so a small image is enlarged —, size
    (int(w * scale), int(h * scale)), `cv2.resize(..., INTER_AREA)`, `cv2.imencode('.jpg')`
    (OpenCV's default quality 95). The script labels the data URL's media type from the file's
    extension (`.png` -> image/png although the bytes are JPEG; `.jpg`/`.jpeg` -> image/jpeg;
    anything else image/jpeg): `mmad-qa` does the same, `mmad-qa-true-type` labels the bytes as
    what they are (image/jpeg), for APIs that check the type (Anthropic rejects a mislabelled
    image).
  - `velm` (VELM's `run_llm.py`): `PIL.Image.open(path).resize((448, 448))` — Pillow's default
    resampling, aspect not kept, mode kept — and `save(format="PNG")` with Pillow's defaults.

OpenCV is the library MMAD's script uses; the same calls give the same bytes (a test compares
them with `cv2.imread`/`cv2.imencode` on the file). Only these two recipes import it.
"""

from __future__ import annotations

import io
from pathlib import Path

QA_BOX = 512
VELM_SIDE = 448
RECIPES = {
    "mmad-qa": "mmad-qa:fit512:cv2-area:jpg95:type-by-extension",
    "mmad-qa-true-type": "mmad-qa:fit512:cv2-area:jpg95:type-jpeg",
    "velm": "velm:448x448:pil-default:png",
}


def recipe_token(recipe: str) -> str:
    """The cache identity of a recipe (its name alone could not change when its rule does)."""
    return RECIPES[recipe]


def qa_fit_size(width: int, height: int, box: int = QA_BOX) -> tuple[int, int]:
    """MMAD's size: scale = min(box / w, box / h) (enlarging too), each side truncated."""
    scale = min(box / width, box / height)
    return int(width * scale), int(height * scale)


def media_type_by_extension(path: str | Path) -> str:
    """The media type MMAD's script writes into the data URL: from the name, not the bytes."""
    name = str(path).lower()
    if name.endswith(".png"):
        return "image/png"
    return "image/jpeg"


def encode_qa(raw: bytes, path: str | Path, *, by_extension: bool = True) -> tuple[bytes, str, int, int]:
    """(JPEG bytes, media type, width, height) as MMAD's GPT-4o script makes them."""
    import cv2
    import numpy as np
    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("OpenCV cannot decode this image")
    height, width = image.shape[:2]
    size = qa_fit_size(width, height)
    if min(size) < 1:
        raise ValueError(f"a {width}x{height} image scales to {size[0]}x{size[1]}: nothing left to send")
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", resized)
    if not ok:
        raise ValueError("OpenCV cannot encode this image as JPEG")
    media_type = media_type_by_extension(path) if by_extension else "image/jpeg"
    return encoded.tobytes(), media_type, size[0], size[1]


def encode_velm(raw: bytes, side: int = VELM_SIDE) -> tuple[bytes, str, int, int]:
    """(PNG bytes, media type, width, height) as VELM's `run_llm.py` makes them."""
    from PIL import Image
    with Image.open(io.BytesIO(raw)) as image:
        resized = image.resize((side, side))
    out = io.BytesIO()
    resized.save(out, format="PNG")
    return out.getvalue(), "image/png", side, side


def encode_recipe(recipe: str, raw: bytes, path: str | Path) -> tuple[bytes, str, int, int]:
    if recipe == "velm":
        return encode_velm(raw)
    return encode_qa(raw, path, by_extension=recipe == "mmad-qa")


def recipe_size(recipe: str, width: int, height: int) -> tuple[int, int]:
    """The size a recipe sends, from the source's size (for token estimates)."""
    if recipe == "velm":
        return VELM_SIDE, VELM_SIDE
    return qa_fit_size(width, height)
