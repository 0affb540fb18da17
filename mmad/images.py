"""Images as the reference prepares them: taller than 512 px -> height 512 (LANCZOS), PNG, base64.

An image's identity for the cache is the sha256 of the source file's bytes plus the preprocessing
spec, so deciding a cache hit never decodes or encodes pixels. PNG is lossless at every
`compress_level`, so the level changes bytes and CPU time but not what the model sees, and is not
part of the identity.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MAX_HEIGHT = 512
SPEC = f"h<={MAX_HEIGHT}:lanczos:png"  # changes here must change the cache key
PNG_MODES = {"1", "L", "LA", "I", "P", "RGB", "RGBA"}


@dataclass(frozen=True)
class ImageRef:
    """What the cache key needs of an image: content hash and preprocessing spec."""

    sha256: str
    spec: str = SPEC


@dataclass(frozen=True)
class EncodedImage:
    """An image ready to send: base64 PNG plus its size after preparation."""

    ref: ImageRef
    media_type: str
    data: str  # base64
    width: int
    height: int


def file_ref(path: Path) -> ImageRef:
    """Identity of a source file without decoding it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return ImageRef(digest.hexdigest())


def prepare_bytes(raw: bytes, compress_level: int = 1) -> tuple[bytes, int, int]:
    """Downscale to 512 px height when taller, keep aspect; encode as PNG."""
    with Image.open(io.BytesIO(raw)) as image:
        image.load()
        if image.height > MAX_HEIGHT:
            width = max(1, round(image.width * MAX_HEIGHT / image.height))
            image = image.resize((width, MAX_HEIGHT), Image.Resampling.LANCZOS)
        if image.mode not in PNG_MODES:
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=compress_level)
        return out.getvalue(), image.width, image.height


def encode_file(path: str | Path, compress_level: int = 1) -> EncodedImage:
    """Read, hash, prepare and base64-encode one image file (runs in a worker process)."""
    raw = Path(path).read_bytes()
    png, width, height = prepare_bytes(raw, compress_level)
    return EncodedImage(ImageRef(hashlib.sha256(raw).hexdigest()), "image/png",
                        base64.b64encode(png).decode("ascii"), width, height)
