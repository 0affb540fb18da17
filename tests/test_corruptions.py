"""Corruptions (RQ6): the ImageNet-C formulas, checked on fixtures with hand-computed pixels and
sample statistics; determinism from the image bytes; validation of the spec."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from mmad.data.corruptions import corrupt, corruption_seed, parse_spec
from mmad.errors import ConfigError


def flat(value, size=(128, 128)) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8))


def gradient() -> Image.Image:
    ramp = np.linspace(0, 255, 64)
    rgb = np.stack([np.tile(ramp, (64, 1)), np.tile(ramp[:, None], (1, 64)), np.full((64, 64), 90.0)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("text", ["fog:3", "brightness:6", "brightness:0", "brightness", "gaussian_noise:x",
                                  "gaussian_noise:-1", ""])
def test_bad_specs_are_one_line_config_errors(text):
    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    message = str(info.value)
    assert "\n" not in message
    assert ("expected one of brightness, gaussian_noise" in message) or ("severity 1..5" in message)


def test_parse_spec_canonical_and_parameters():
    assert parse_spec("gaussian_noise:2").canonical == "gaussian_noise:2"
    assert parse_spec(" brightness: 3").canonical == "brightness:3"
    assert [parse_spec(f"gaussian_noise:{s}").parameter for s in range(1, 6)] == [.08, .12, .18, .26, .38]
    assert [parse_spec(f"brightness:{s}").parameter for s in range(1, 6)] == [.1, .2, .3, .4, .5]


def test_brightness_pixels_by_hand():
    # (200, 120, 40): V = 200/255; hue and saturation stay, so RGB scales with the new V.
    # +0.2: V*255 = 200 + 51 = 251 -> (251, 150.6, 50.2) -> (251, 151, 50)
    out = np.asarray(corrupt(flat((200, 120, 40), (4, 4)), "brightness:2", b"x"))
    assert out[0, 0].tolist() == [251, 151, 50]
    # +0.3 passes V = 1: clipped -> (255, 153, 51)
    out = np.asarray(corrupt(flat((200, 120, 40), (4, 4)), "brightness:3", b"x"))
    assert out[0, 0].tolist() == [255, 153, 51]
    # grey 100 + 0.2 * 255 = 151 on every channel
    assert np.asarray(corrupt(flat(100, (4, 4)), "brightness:2", b"x"))[0, 0].tolist() == [151] * 3


def test_gaussian_noise_statistics_match_the_formula():
    image = flat(128)
    for severity, c in ((1, .08), (2, .12)):
        out = np.asarray(corrupt(image, f"gaussian_noise:{severity}", b"fixture"), dtype=float)
        residual = out - 128.0
        n = residual.size
        sigma = c * 255
        # rounding adds variance 1/12; 128 is > 5 sigma from both clip edges at these severities
        expected_sd = np.sqrt(sigma ** 2 + 1 / 12)
        assert abs(residual.mean()) < 4 * sigma / np.sqrt(n)
        assert residual.std() == pytest.approx(expected_sd, rel=4 / np.sqrt(2 * n) + 1e-3)


def test_noise_seed_is_the_documented_hash():
    data = b"some image file bytes"
    digest = hashlib.sha256(hashlib.sha256(data).digest() + b"gaussian_noise:1").digest()
    assert corruption_seed(data, "gaussian_noise:1") == int.from_bytes(digest[:8], "little")
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    expected = np.rint(np.clip(128 / 255 + rng.normal(size=(8, 8, 3), scale=.08), 0, 1) * 255)
    assert np.array_equal(np.asarray(corrupt(flat(128, (8, 8)), "gaussian_noise:1", data)), expected)


def test_same_image_same_noise_other_image_other_noise():
    image = gradient()
    a = corrupt(image, "gaussian_noise:3", b"file-a")
    assert np.array_equal(np.asarray(a), np.asarray(corrupt(image.copy(), "gaussian_noise:3", b"file-a")))
    assert not np.array_equal(np.asarray(a), np.asarray(corrupt(image, "gaussian_noise:3", b"file-b")))
    assert a.mode == "RGB" and a.size == image.size


def test_effect_grows_with_severity():
    image = gradient()
    base = np.asarray(image, dtype=float)
    for name in ("brightness", "gaussian_noise"):
        change = [np.abs(np.asarray(corrupt(image, f"{name}:{s}", b"g"), dtype=float) - base).mean()
                  for s in range(1, 6)]
        assert all(a < b for a, b in zip(change, change[1:])), (name, change)


def test_greyscale_and_alpha_come_back_rgb():
    grey = Image.fromarray(np.full((6, 6), 100, np.uint8))
    assert np.asarray(corrupt(grey, "brightness:2", b"g"))[0, 0].tolist() == [151] * 3
    rgba = Image.new("RGBA", (5, 5), (10, 20, 30, 0))
    assert corrupt(rgba, "gaussian_noise:1", b"a").mode == "RGB"
