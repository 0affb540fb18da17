"""Images as the reference scripts send them, and their identity for the cache.

Preparation rules (`ImageSpec`), per prompt family by default (`spec_for_family`):
  - industrial and medical scripts: taller than 512 px -> height 512, width `int(w * (512 / h))`
    (the scripts' expression, evaluated in that order: the ratio first, so floating point gives
    561x561 -> 511, where `int(w * 512 / h)` gives 512), LANCZOS; re-encoded as PNG;
  - the multidog (novelty) script: the original file bytes, no resize, no re-encode;
  - `--max-height N` forces the resize rule with another height, `original` forces the bytes.
High-bit-depth images (16-bit grayscale `I;16`, 32-bit `I`, float `F`) are scaled to 8 bits by
their nominal range (16-bit: value / 257; 32-bit integers within 0..65535 likewise; floats within
0..1: x 255; anything else: the image's own min..max), never saturated the way a plain
`convert("L")` saturates them. Pillow already reads 48-bit RGB PNG/TIFF as 8-bit RGB (the high byte).

An image's identity for the cache is the sha256 of the source file's bytes plus the spec's
token, so deciding a cache hit never decodes or encodes pixels. PNG is lossless at every
`compress_level`, so the level changes bytes and CPU time but not what the model sees, and is
not part of the identity.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from mmad.reading import open_file, read_bytes

REFERENCE_MAX_HEIGHT = 512
PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}
# What the vendors accept as is; anything else is re-encoded as PNG even in "original" mode.
SENDABLE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class ImageSpec:
    """How an image is prepared before it is sent; `token` goes into the cache key."""

    max_height: int | None = REFERENCE_MAX_HEIGHT  # None: never resized
    original: bool = False  # send the file's bytes verbatim (sendable formats only)
    corrupt: str | None = None  # e.g. "brightness:3" (see mmad.data.corruptions)
    detail: str | None = None  # OpenAI's image `detail` ("low" / "high"); None: not sent
    recipe: str | None = None  # a sister benchmark's own preparation (mmad.data.recipes): "mmad-qa", "velm"

    @property
    def token(self) -> str:
        if self.recipe is not None:
            from mmad.data.recipes import recipe_token
            base = recipe_token(self.recipe)
        elif self.original and self.corrupt is None:
            base = "original"
        elif self.max_height is None:
            base = "png"
        else:
            base = f"h<={self.max_height}:trunc:lanczos:png"
        if self.corrupt is not None:
            base += f"+{self.corrupt}"
        return base if self.detail is None else f"{base}:detail-{self.detail}"

    def with_corruption(self, corrupt: str | None) -> ImageSpec:
        return replace(self, corrupt=corrupt)


REFERENCE_SPEC = ImageSpec()
ORIGINAL_SPEC = ImageSpec(max_height=None, original=True)


def spec_for_family(family: str | None, max_height: str | None = None, detail: str | None = None) -> ImageSpec:
    """The reference scripts' rule for a prompt family, or the one forced by `--max-height`
    ("original", or a number of pixels); `detail` is OpenAI's image detail (None: not sent)."""
    if max_height in (None, "", "auto"):
        spec = ORIGINAL_SPEC if family == "novelty" else REFERENCE_SPEC
    elif max_height == "original":
        spec = ORIGINAL_SPEC
    else:
        spec = ImageSpec(max_height=int(max_height))
    return replace(spec, detail=detail if detail not in (None, "auto") else None)


@dataclass(frozen=True)
class ImageRef:
    """What the cache key needs of an image: content hash and preparation token."""

    sha256: str
    spec: str = REFERENCE_SPEC.token

    @property
    def detail(self) -> str | None:
        """OpenAI's image detail recorded in the token, if any."""
        _, marker, detail = self.spec.rpartition(":detail-")
        return detail if marker else None


@dataclass(frozen=True)
class EncodedImage:
    """An image ready to send: base64 bytes, their media type, and the size the model sees."""

    ref: ImageRef
    media_type: str
    data: str  # base64
    width: int
    height: int
    detail: str | None = None  # OpenAI's image detail to send, if any


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_file(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_ref(path: Path, spec: ImageSpec = REFERENCE_SPEC) -> ImageRef:
    """Identity of a source file without decoding it."""
    return ImageRef(sha256_file(path), spec.token)


def resized_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    """The reference rule: taller than `max_height` -> that height, width `int(w * (max / h))`,
    the scripts' expression exactly (the ratio is rounded to a float first)."""
    if max_height is None or height <= max_height:
        return width, height
    return max(1, int(width * (max_height / height))), max_height


def to_8bit(image: Image.Image) -> Image.Image:
    """High-bit-depth grayscale to 8-bit by its nominal range (see the module docstring)."""
    if image.mode in PNG_MODES or image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "PA"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.size and values.min() >= 0
                                          and values.max() <= 65535):
        scaled = values / 257.0
    elif image.mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        scaled = values * 255.0
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def prepare_image(image: Image.Image, spec: ImageSpec, seed_bytes: bytes = b"") -> Image.Image:
    """Decoded image -> the pixels the model sees under `spec` (resize, 8-bit, corruption)."""
    image = to_8bit(image)
    width, height = resized_size(image.width, image.height, spec.max_height)
    if (width, height) != image.size:  # Pillow itself falls back to NEAREST for "1" and "P", as in the scripts
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    if image.mode not in PNG_MODES:
        image = image.convert("RGB")
    if spec.corrupt is not None:
        from mmad.data.corruptions import corrupt
        image = corrupt(image, spec.corrupt, seed_bytes)
    return image


def prepare_bytes(raw: bytes, spec: ImageSpec = REFERENCE_SPEC, compress_level: int = 1) -> tuple[bytes, str, int, int]:
    """(bytes to send, media type, width, height) for one source file's bytes."""
    with Image.open(io.BytesIO(raw)) as image:
        if spec.original and spec.corrupt is None and image.format in SENDABLE:
            return raw, SENDABLE[image.format], image.width, image.height
        image.load()
        prepared = prepare_image(image, spec, raw)
    out = io.BytesIO()
    prepared.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue(), "image/png", prepared.width, prepared.height


def encode_file(path: str | Path, spec: ImageSpec = REFERENCE_SPEC, compress_level: int = 1) -> EncodedImage:
    """Read, hash, prepare and base64-encode one image file (runs on a worker thread)."""
    raw = read_bytes(path)
    if spec.recipe is not None:
        from mmad.data.recipes import encode_recipe
        data, media_type, width, height = encode_recipe(spec.recipe, raw, path)
    else:
        data, media_type, width, height = prepare_bytes(raw, spec, compress_level)
    return EncodedImage(ImageRef(hashlib.sha256(raw).hexdigest(), spec.token), media_type,
                        base64.b64encode(data).decode("ascii"), width, height, spec.detail)


def prepared_size(path: Path, spec: ImageSpec = REFERENCE_SPEC) -> tuple[int, int]:
    """The size an image is sent at, from its header alone (for token estimates)."""
    with open_file(path) as handle, Image.open(handle) as image:
        width, height = image.size
    if spec.recipe is not None:
        from mmad.data.recipes import recipe_size
        return recipe_size(spec.recipe, width, height)
    if spec.original and spec.corrupt is None:
        return width, height
    return resized_size(width, height, spec.max_height)


def decode_check(path: Path) -> str | None:
    """None when the whole image decodes; else the reason (truncated, not an image, empty)."""
    try:
        with open_file(path) as handle, Image.open(handle) as image:
            image.load()
            if image.width <= 0 or image.height <= 0:
                return "empty image"
    except FileNotFoundError:
        return "file not found"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
