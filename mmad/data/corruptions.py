"""Image corruptions for the robustness analysis (paper RQ6, Table 5), deterministic per image.

Two corruptions at severities S = 1..5 with the parameters of Hendrycks & Dietterich's ImageNet-C
(ICLR 2019, `make_imagenet_c.py`):

    gaussian_noise  x / 255 + N(0, c), clipped to [0, 1]      c = .08, .12, .18, .26, .38
    brightness      V += c in HSV (x / 255), clipped to [0, 1] c = .1, .2, .3, .4, .5
                    (scikit-image's rgb2hsv / hsv2rgb, as ImageNet-C does)

The result is scaled back by 255 and **rounded** to uint8 (ImageNet-C truncates with
`np.uint8`, a -0.5 grey-level bias that rounding avoids). Every image comes back as RGB
(greyscale and palette images are converted first, an alpha channel is dropped), so a
corrupted image is sent the same way as an RGB one.

Determinism: the noise generator is seeded from sha256(sha256(image bytes) + canonical spec), so
the same image file with the same spec always gets the same noise, whatever the order of jobs
or the process; two different images (or two severities) get independent noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mmad.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)
PARAMETERS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # standard deviation on the [0, 1] scale
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to V of HSV on the [0, 1] scale
}


@dataclass(frozen=True)
class CorruptionSpec:
    """A corruption and its severity; `canonical` ("brightness:3") names it in caches and runs."""

    name: str
    severity: int

    @property
    def canonical(self) -> str:
        return f"{self.name}:{self.severity}"

    @property
    def parameter(self) -> float:
        return PARAMETERS[self.name][self.severity - 1]


def parse_spec(text: str) -> CorruptionSpec:
    """`NAME:S` with NAME in PARAMETERS and S in 1..5; anything else is a one-line ConfigError."""
    name, sep, level = str(text).strip().partition(":")
    if name not in PARAMETERS:
        raise ConfigError(f"unknown corruption {name!r} in {text!r}; expected one of "
                          f"{', '.join(sorted(PARAMETERS))} as NAME:SEVERITY (e.g. brightness:3)")
    if not sep or not level.strip().isdigit() or int(level) not in SEVERITIES:
        raise ConfigError(f"corruption {text!r} needs a severity 1..5 after the colon (e.g. {name}:3)")
    return CorruptionSpec(name, int(level))


def corruption_seed(seed_bytes: bytes, spec: CorruptionSpec | str) -> int:
    """A 64-bit seed from the image's bytes and the canonical spec (see the module docstring)."""
    canonical = (parse_spec(spec) if isinstance(spec, str) else spec).canonical
    digest = hashlib.sha256(hashlib.sha256(seed_bytes).digest() + canonical.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little")


def corrupt(image: Image.Image, spec: CorruptionSpec | str, seed_bytes: bytes) -> Image.Image:
    """The corrupted RGB image. `seed_bytes` = the source file's bytes (they seed the noise)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    x = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if parsed.name == "gaussian_noise":
        rng = np.random.default_rng(corruption_seed(seed_bytes, parsed))
        out = x + rng.normal(size=x.shape, scale=parsed.parameter)
    else:
        out = _brightness(x, parsed.parameter)
    return Image.fromarray(np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8))


def _brightness(x: np.ndarray, amount: float) -> np.ndarray:
    from skimage import color  # imported here: only brightness needs it

    hsv = color.rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + amount, 0.0, 1.0)
    return color.hsv2rgb(hsv)
