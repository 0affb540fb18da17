"""`--corrupt` end to end: the corrupted pixels are what the model receives, the run is named and
described by its corruption, detectors take it too, and the report's Table 5 groups the runs."""

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmad import cli
from mmad.data.corruptions import corrupt
from tests.conftest import cli_env, make_industry_subset


@pytest.fixture
def setup(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=2, size=(48, 40))
    return tmp_path, server, cli_env(tmp_path)


def score(env, server, out, *extra):
    return subprocess.run([sys.executable, "-m", "mmad.cli", "score", "--provider", "openai", "--model", "m",
                           "--base-url", server.openai_url, "--dataset", "toy", "--out", str(out), "-q", *extra],
                          env=env, capture_output=True, text=True, timeout=120)


def received_images(server):
    return [[np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))) for data in r.images()]
            for r in server.requests if r.body.get("max_tokens") == 300]


def test_the_model_receives_the_corrupted_query_and_clean_references(setup):
    tmp, server, env = setup
    assert score(env, server, tmp / "clean").returncode == 0
    clean = received_images(server)
    server.requests.clear()
    result = score(env, server, tmp / "bright", "--corrupt", "brightness:3")
    assert result.returncode == 0, result.stderr
    bright = received_images(server)
    info = json.loads((tmp / "bright" / "run.json").read_text())
    assert info["run"] == "m+brightness3" and info["settings"]["corrupt"] == "brightness:3"
    source = tmp / "data" / "Industry" / "toy" / "widget" / "test" / "good_level_0" / "000.png"
    expected = np.asarray(corrupt(Image.open(source).convert("RGB"), "brightness:3", source.read_bytes()))
    assert any(np.array_equal(images[-1], expected) for images in bright)  # the formula, on the wire
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(clean, bright))  # references stay clean
    assert np.mean([images[-1].mean() for images in bright]) > np.mean([images[-1].mean() for images in clean])
    server.requests.clear()
    assert score(env, server, tmp / "both", "--corrupt", "brightness:3", "--corrupt-references").returncode == 0
    both = received_images(server)
    assert not np.array_equal(both[0][0], clean[0][0])


def test_detectors_take_the_corruption_and_the_report_groups_the_runs(setup, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="conventional detectors need torch")
    import mmad_conventional.run as run
    from mmad_conventional.backbone import efficientnet_lite0
    monkeypatch.setattr(run, "make_backbone", lambda name, weights: efficientnet_lite0(pretrained=False))
    tmp, _, _ = setup
    root = str(tmp / "data")
    base = ["score", "--provider", "patchcore", "--root", root, "--dataset", "toy", "--image-size", "32",
            "--device", "cpu", "-q"]
    assert cli.main(base + ["--out", str(tmp / "pc")]) == 0
    assert cli.main(base + ["--out", str(tmp / "pc-noise"), "--corrupt", "gaussian_noise:5"]) == 0
    info = json.loads((tmp / "pc-noise" / "run.json").read_text())
    assert info["settings"]["corrupt"] == "gaussian_noise:5" and info["kind"] == "detector"
    clean = (tmp / "pc" / "patchcore-3shot_toy_widget.csv").read_text()
    assert info["run"] == "patchcore-3shot+gaussian-noise5"
    noisy = (tmp / "pc-noise" / "patchcore-3shot+gaussian-noise5_toy_widget.csv").read_text()
    assert clean != noisy
    capsys.readouterr()
    assert cli.main(["report", str(tmp / "pc"), str(tmp / "pc-noise"), "--json", "--root", root]) == 0
    report = json.loads(capsys.readouterr().out)
    from mmad.analysis.robustness import ORIGINAL
    [group] = report["robustness"]["groups"]
    assert group["label"] == "patchcore-3shot"
    assert group["runs"] == {ORIGINAL: "patchcore-3shot", "gaussian_noise:5": "patchcore-3shot+gaussian-noise5"}
    assert set(group["c_index"][ORIGINAL]) == {"toy"} and set(group["c_index"]["gaussian_noise:5"]) == {"toy"}
