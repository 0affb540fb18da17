"""RQ3: mask areas, area-based levels (ties), where masks are found, and Table 4 by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmad.analysis.area import area_analysis, area_levels, mask_area, mask_candidates
from mmad.analysis.runs import load_runs
from mmad.data.datasets import resolve
from mmad.data.synth import _defect_with_mask, synthesize
from tests.conftest import make_industry_subset
from tests.run_fixtures import write_run


def save_mask(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(array, 255, 0).astype(np.uint8)).save(path)


def test_mask_area_resized_to_width_256_nearest(tmp_path):
    mask = np.zeros((256, 512), bool)
    mask[20:60, 10:110] = True  # 100 x 40 at even offsets: exactly 50 x 20 after halving
    save_mask(tmp_path / "a.png", mask)
    assert mask_area(tmp_path / "a.png") == 1000
    small = np.zeros((16, 32), bool)
    small[3, 5] = small[7, 9] = True  # upscaled x8: each pixel becomes an 8 x 8 block
    save_mask(tmp_path / "b.png", small)
    assert mask_area(tmp_path / "b.png") == 128
    save_mask(tmp_path / "c.png", np.ones((200, 300), bool))  # height round(200 * 256 / 300) = 171
    assert mask_area(tmp_path / "c.png") == 256 * 171


@pytest.mark.parametrize("areas, k, expected", [
    (list(range(1, 10)), 3, [1, 1, 1, 2, 2, 2, 3, 3, 3]),
    (list(range(1, 11)), 3, [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]),  # (r - .5) * 3 / 10: .15 ... 2.85
    ([5, 5, 5, 5, 10, 20], 3, [2, 2, 2, 2, 3, 3]),  # the tied block's mean rank 2.5 sits on the edge
    ([1, 2, 2, 3], 2, [1, 2, 2, 2]),
    ([7, 7, 7], 3, [2, 2, 2]),  # all equal: one level
    ([30, 10, 20], 3, [3, 1, 2]),  # order of input kept
])
def test_area_levels_equal_frequency_with_ties(areas, k, expected):
    assert area_levels(np.array(areas), k).tolist() == expected


def test_mask_lookup_order(tmp_path):
    make_industry_subset(tmp_path, "toy", "widget", per_level=1)
    subset = resolve(tmp_path, "toy", "widget")[0]
    base = tmp_path / "Industry" / "toy" / "widget"
    found = mask_candidates(subset, "defect_level_1/000.png", tmp_path / "m")
    assert found[0] == tmp_path / "m" / "toy" / "widget" / "defect_level_1" / "000_mask.png"
    assert found[1] == tmp_path / "m" / "toy" / "widget" / "defect_level_1" / "000.png"
    assert found[-2:] == [base / "ground_truth" / "defect_level_1" / "000_mask.png",
                          base / "ground_truth" / "defect_level_1" / "000.png"]


def _toy(tmp_path, with_masks_dir=False):
    """toy/widget: 3 images per level 0..3 (32 px wide, so area = 64 x mask pixels)."""
    root = tmp_path / "data"
    make_industry_subset(root, "toy", "widget", per_level=3)
    pixels = {1: [1, 6, 2], 2: [3, 4, 9], 3: [5, 7, 8]}
    base = (tmp_path / "masks" / "widget") if with_masks_dir else root / "Industry" / "toy" / "widget" / "ground_truth"
    rels, sev, scores = [], [], []
    for level in range(4):
        for i in range(3):
            folder = "good_level_0" if level == 0 else f"defect_level_{level}"
            rels.append(f"{folder}/{i:03d}.png")
            sev.append(level)
            scores.append(0.0 if level == 0 else float(pixels[level][i]))
            if level:
                mask = np.zeros((32, 32), bool)
                mask.flat[:pixels[level][i]] = True
                name = f"{i:03d}_mask.png" if i != 2 else f"{i:03d}.png"  # both namings accepted
                save_mask(base / folder / name, mask)
    return root, rels, sev, scores


@pytest.mark.parametrize("with_masks_dir", [False, True])
def test_table4_by_hand(tmp_path, with_masks_dir):
    root, rels, sev, scores = _toy(tmp_path, with_masks_dir)
    write_run(tmp_path / "r", "r", {("toy", "widget"): (sev, scores)}, kind="detector",
              paths={("toy", "widget"): rels})
    runs = load_runs([tmp_path / "r"], data_root=root)
    table = area_analysis(runs, root, masks_dir=tmp_path / "masks" if with_masks_dir else None)
    (record,) = table.records
    # scores = mask pixels: area levels (1..9 in thirds) are followed perfectly
    assert record.c_area == 1.0 and record.spearman_area_score == pytest.approx(1.0)
    # risk levels: 27 normal-vs-anomalous pairs won, L1-L2 7/9, L1-L3 8/9, L2-L3 6/9 -> 48 / 54
    assert record.c_risk == pytest.approx(48 / 54)
    assert (record.n, record.anomalous, record.masks_missing) == (12, 9, 0)
    area, score, risk = table.points[("r", "toy")]
    assert sorted(area.tolist()) == [64 * p for p in range(1, 10)] and sorted(score.tolist()) == list(range(1, 10))


def test_missing_masks_and_failed_rows_are_left_out(tmp_path):
    root, rels, sev, scores = _toy(tmp_path)
    (root / "Industry/toy/widget/ground_truth/defect_level_3/000_mask.png").unlink()  # L3 area 5 gone
    scores[4] = None  # a failed job at level 1 (area 6)
    write_run(tmp_path / "r", "r", {("toy", "widget"): (sev, scores)}, kind="mllm", paths={("toy", "widget"): rels})
    (record,) = area_analysis(load_runs([tmp_path / "r"], data_root=root), root).records
    assert (record.n, record.anomalous, record.masks_missing) == (10, 7, 1)
    # risk C by hand on the kept rows: normals (3) x anomalous (7) = 21 won;
    # L1 {1,2} vs L2 {3,4,9}: 6/6; L1 vs L3 {7,8}: 4/4; L2 vs L3: 3 vs {7,8} 2, 4: 2, 9: 0 -> 4/6
    assert record.c_risk == pytest.approx((21 + 6 + 4 + 4) / (21 + 6 + 4 + 6))


def test_no_masks_is_reported_not_computed(tmp_path):
    root = tmp_path / "data"
    make_industry_subset(root, "toy", "widget", per_level=2)
    write_run(tmp_path / "r", "r", {("toy", "widget"): ([0, 0, 1, 1, 2, 2, 3, 3], [1, 2, 3, 4, 5, 6, 7, 8])},
              kind="mllm", paths={("toy", "widget"): [f"good_level_0/{i:03d}.png" for i in range(2)]
                                  + [f"defect_level_{lv}/{i:03d}.png" for lv in (1, 2, 3) for i in range(2)]})
    write_run(tmp_path / "x", "x", {("elsewhere", "thing"): ([0, 1], [1, 2])}, kind="mllm")
    table = area_analysis(load_runs([tmp_path / "r", tmp_path / "x"], data_root=root), root)
    assert table.records == [] and table.without_masks == ["toy/widget"]
    assert table.without_data == ["elsewhere/thing"]


def test_synth_writes_a_mask_for_every_defect(tmp_path):
    synthesize(tmp_path, train=1, per_level=3, size=64, textures=("brick",))
    base = tmp_path / "Industry" / "synth" / "brick"
    masks = sorted((base / "ground_truth").rglob("*_mask.png"))
    kinds = ("blotch", "scratch", "blotch,scratch")  # image i of a level has type i mod 3
    assert sorted(m.relative_to(base / "ground_truth").as_posix() for m in masks) == sorted(
        f"{kinds[i]}_level_{lv}/{i:03d}_mask.png" for lv in (1, 2, 3) for i in range(3))
    assert not (base / "ground_truth" / "good_level_0").exists()
    areas = {lv: np.mean([mask_area(base / "ground_truth" / f"{kinds[i]}_level_{lv}" / f"{i:03d}_mask.png")
                          for i in range(3)]) for lv in (1, 2, 3)}
    assert 0 < areas[1] < areas[2] < areas[3]


def test_synth_mask_is_exactly_the_changed_pixels():
    rng = np.random.default_rng(1)
    image = np.full((96, 96), 100.0)
    for level in (1, 2, 3):
        out, mask = _defect_with_mask(image, level, rng)
        changed = out != image
        assert mask.any() and not changed[~mask].any()  # nothing outside the mask changed
        assert changed[mask].all()  # and everything inside did
