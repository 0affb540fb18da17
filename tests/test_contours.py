"""Contours from anomaly maps: bilinear upsampling, the region, the 2-px external outline, the files."""

import numpy as np
from PIL import Image

from mmad import cli
from mmad.data import datasets
from mmad.hybrid.contours import contour_name, detected_region, draw, outline, render, upsample
from tests.conftest import make_industry_subset
from tests.hybrid_helpers import red_mask, write_detector_run


def bilinear_by_hand(grid, width, height):
    """Pixel-centre aligned bilinear interpolation with edge clamping, one pixel at a time."""
    h, w = grid.shape
    out = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            sy = min(max((y + 0.5) * h / height - 0.5, 0), h - 1)
            sx = min(max((x + 0.5) * w / width - 0.5, 0), w - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            out[y, x] = ((1 - fy) * ((1 - fx) * grid[y0, x0] + fx * grid[y0, x1])
                         + fy * ((1 - fx) * grid[y1, x0] + fx * grid[y1, x1]))
    return out


def test_upsampling_is_bilinear():
    grid = np.random.default_rng(3).uniform(0, 5, (6, 5)).astype(np.float16)
    np.testing.assert_allclose(upsample(grid, 40, 48), bilinear_by_hand(grid.astype(np.float64), 40, 48), atol=1e-4)


def chessboard_distance_to_outside(mask):
    """For each pixel of `mask`, the chessboard distance to the nearest pixel outside it (or the border)."""
    h, w = mask.shape
    outside = [(y, x) for y in range(-1, h + 1) for x in range(-1, w + 1)
               if not (0 <= y < h and 0 <= x < w) or not mask[y, x]]
    ys, xs = np.array(outside).T
    dist = np.full(mask.shape, -1)
    for y, x in zip(*np.nonzero(mask)):
        dist[y, x] = np.min(np.maximum(abs(ys - y), abs(xs - x)))
    return dist


def test_outline_is_two_pixels_inside_the_outer_edge_and_ignores_holes():
    mask = np.zeros((30, 30), bool)
    mask[5:25, 4:20] = True
    mask[11:17, 9:15] = False  # a hole: its edge is not drawn (external contour only)
    mask[0:6, 25:30] = True  # a region touching the image edge: the edge counts as outside
    band = outline(mask)
    filled = mask.copy()
    filled[11:17, 9:15] = True
    dist = chessboard_distance_to_outside(filled)
    assert np.array_equal(band, (dist >= 1) & (dist <= 2))
    assert not band[10:18, 8:16].any()  # nothing around the hole
    assert band[0, 25:30].all() and band[0:6, 29].all()


def test_region_and_drawing():
    grid = np.zeros((8, 8), np.float16)
    grid[2:4, 5:7] = 10.0  # hot patches: x in [5, 7) of 8 -> pixels 40..56 of 64
    region = detected_region(grid, 64, 48, threshold=4.0)
    ys, xs = np.nonzero(region)
    assert 35 <= xs.min() and xs.max() <= 60 and 9 <= ys.min() and ys.max() <= 27
    flat = np.zeros((8, 8), np.float16)
    flat[6, 1] = 4.0005  # only just above the threshold at the patch: interpolation flattens it
    peak = detected_region(flat, 64, 64, threshold=4.0)
    assert peak.any() and peak.sum() < 20  # the peak pixels are outlined, not nothing
    assert not detected_region(flat, 64, 64, threshold=5.0).any()  # below the threshold: no region
    query = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    drawn = draw(query, outline(region))
    red = red_mask(drawn)
    assert np.array_equal(red, outline(region))
    assert np.array_equal(np.asarray(drawn)[~red], np.asarray(query)[~red])  # the rest is the query, unchanged


def test_render_names_by_inputs_and_writes_once(tmp_path):
    query = tmp_path / "q.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(query)
    grid = np.zeros((4, 4), np.float16)
    grid[1, 1] = 3
    first = render(query, grid, 1.0, tmp_path / "c", query_sha256="a" * 64, map_digest="m1")
    assert first.pixels > 0 and first.path.name == contour_name("a" * 64, "m1", 1.0)
    before = first.path.stat().st_mtime_ns
    again = render(query, grid, 1.0, tmp_path / "c", query_sha256="a" * 64, map_digest="m1")
    assert again.path == first.path and again.sha256 == first.sha256 and first.path.stat().st_mtime_ns == before
    names = {contour_name("a" * 64, "m1", t) for t in (1.0, 1.5)} | {contour_name("a" * 64, "m2", 1.0),
                                                                      contour_name("b" * 64, "m1", 1.0)}
    assert len(names) == 4  # threshold, map and query each change the file


def test_cli_contour_writes_pngs_for_images_at_or_above_the_threshold(tmp_path, capsys):
    root = tmp_path / "data"
    make_industry_subset(root, "toy", "widget", per_level=2, size=(48, 48))
    subset = datasets.resolve(root, "toy", "widget")[0]
    paths = datasets.load_subset(subset).paths
    scores = dict(zip(paths, [0.1, 0.9, 0.5, 0.2, 0.7, 0.8, 0.3, 1.0]))
    det = write_detector_run(tmp_path / "det", subset, scores, calibration=[0.2, 0.4, 0.3])  # threshold 0.4
    code = cli.main(["contour", str(det), "--root", str(root), "--dataset", "toy", "--out", str(tmp_path / "png")])
    out = capsys.readouterr().out
    assert code == 0 and "threshold 0.4 (max of 3 held-out normal image scores)" in out and "5 of 8 images" in out
    folder = tmp_path / "png" / "toy" / "widget"
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert written == sorted(p for p, s in scores.items() if s >= 0.4)
    with Image.open(folder / paths[1]) as image:
        red = red_mask(image)
    ys, xs = np.nonzero(red)  # the hot patch (2, 5) of an 8x8 grid on 48 px: rows 12..18, columns 30..36
    assert red.any() and 6 <= ys.min() and ys.max() <= 24 and 24 <= xs.min() and xs.max() <= 42
    assert "detector_score,gate,red_pixels" in (folder / "contours.csv").read_text()
    code = cli.main(["contour", str(det), "--root", str(root), "--dataset", "toy", "--out", str(tmp_path / "p2"),
                     "--gate-threshold", "0.95"])
    assert code == 0 and len(list((tmp_path / "p2").rglob("*.png"))) == 1


def test_full_shot_run_needs_a_given_threshold(tmp_path, capsys):
    root = tmp_path / "data"
    make_industry_subset(root, "toy", "widget", per_level=1, size=(32, 32))
    subset = datasets.resolve(root, "toy", "widget")[0]
    scores = {p: 1.0 for p in datasets.load_subset(subset).paths}
    det = write_detector_run(tmp_path / "det", subset, scores, calibration=[],
                             settings={"method": "patchcore", "refs": None, "task": "score"})
    code = cli.main(["contour", str(det), "--root", str(root), "--dataset", "toy", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "full-shot" in err and "--gate-threshold" in err
