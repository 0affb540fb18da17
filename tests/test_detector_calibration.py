"""conventional/run.py saves what a hybrid gate needs: held-out normals scored like test images."""

import shutil

import numpy as np
import pytest

pytest.importorskip("torch", reason="conventional detectors need torch: pip install -e '.[conventional]'")

from mmad.data import datasets  # noqa: E402
from mmad.results.files import read_result_file  # noqa: E402
from mmad_conventional.run import CALIBRATION_MAX, DetectorSettings, run_detector  # noqa: E402
from tests.conftest import make_industry_subset  # noqa: E402
from tests.test_conventional import random_backbone  # noqa: E402


def test_held_out_normals_are_scored_like_test_images(tmp_path, monkeypatch):
    """The normal-train images after the 3 references are never fitted on; copies of two of them
    placed among the test images get the same scores as their calibration entries."""
    random_backbone(monkeypatch)
    make_industry_subset(tmp_path, "toy", "widget", per_level=2, train=6, size=(40, 40))
    subset = datasets.resolve(tmp_path, "toy", "widget")[0]
    train = datasets.list_images(subset.reference_dir)
    for i, source in enumerate(train[4:6]):  # test normals 000, 001 = held-out train 004, 005
        shutil.copy(source, subset.test_root / "good_level_0" / f"{i:03d}.png")
    settings = DetectorSettings(device="cpu", image_size=32, batch_size=3)
    report = run_detector([subset], settings, out_dir=tmp_path / "few", run_name="pc", refs=3)
    stored = np.load(report.csv_paths[0].with_suffix(".maps.npz"))
    assert list(stored["calibration_names"]) == ["003.png", "004.png", "005.png"]
    calibration = dict(zip(stored["calibration_names"], stored["calibration_scores"]))
    table = read_result_file(report.csv_paths[0])
    scores = dict(zip(table.paths, table.scores))
    assert calibration["004.png"] == pytest.approx(scores["good_level_0/000.png"], rel=1e-5)
    assert calibration["005.png"] == pytest.approx(scores["good_level_0/001.png"], rel=1e-5)
    np.testing.assert_allclose(stored["scores"], table.scores, rtol=1e-6)  # the test scores, in template order
    maps = stored["maps"].astype(np.float64)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), table.scores, rtol=2e-3)  # image score = map maximum
    assert stored["calibration_map_mean"].shape == (3,) and np.all(
        stored["calibration_map_mean"] <= stored["calibration_map_p99"])
    assert np.all(stored["calibration_map_p99"] <= stored["calibration_scores"] + 1e-9)

    full = run_detector([subset], settings, out_dir=tmp_path / "full", run_name="pc", refs=None)
    stored = np.load(full.csv_paths[0].with_suffix(".maps.npz"))
    assert stored["calibration_scores"].size == 0  # full-shot fits on every normal image: none held out


def test_maps_without_calibration_are_scored_again(tmp_path, monkeypatch):
    """A subset whose maps predate the calibration keys is not 'already done'."""
    import mmad_conventional.run as run
    random_backbone(monkeypatch)
    make_industry_subset(tmp_path, "toy", "widget", per_level=1, train=4, size=(32, 32))
    subset = datasets.resolve(tmp_path, "toy", "widget")[0]
    settings = DetectorSettings(device="cpu", image_size=32)
    report = run_detector([subset], settings, out_dir=tmp_path / "o", run_name="pc", refs=3)
    path = report.csv_paths[0].with_suffix(".maps.npz")
    stored = dict(np.load(path))
    assert CALIBRATION_MAX >= stored["calibration_scores"].size == 1
    np.savez_compressed(path, **{k: stored[k] for k in ("paths", "maps", "image_size")})  # the old format
    again = run_detector([subset], settings, out_dir=tmp_path / "o", run_name="pc", refs=3, resume=True)
    assert not again.timings[0].skipped and "calibration_scores" in np.load(path).files
    once_more = run.run_detector([subset], settings, out_dir=tmp_path / "o", run_name="pc", refs=3, resume=True)
    assert once_more.timings[0].skipped
