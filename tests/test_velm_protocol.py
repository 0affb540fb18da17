"""VELM as published: its prompts for every category of its three real class files, the request
`mmad classify` sends against VELM's run_llm.py request (rendered here from VELM's strings and
calls, written independently of mmad), contours from ground-truth masks as create_contour.py
draws them, the visible minimum, and the negligible-vs-critical grouping against an independent
rendering of anomaly_vs_defect.py."""

import base64
import io
import json
import random
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mmad import cli
from mmad.classify.classes import load_class_file
from mmad.classify.grouping import velm_group_rows
from mmad.classify.prompt import load_classify_prompt
from mmad.hybrid.contours_velm import MIN_SIDE, draw
from tests.wire_server import WireServer

VELM_CLASSES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "velm-classes"
FILES = ("mvtec_ac_des.json", "mvtec_ad_des.json", "visa_ac_des.json")
BASE = {"raw": "The first image is a normal OBJECT. The second image is an anomalous OBJECT. The normal OBJECT "
               "NORMAL_DES. ",
        "conditioned": "The first image is a normal OBJECT. The second image is an anomalous OBJECT. The third image "
                       "indicates the detected anomaly by a red line contour. The normal OBJECT NORMAL_DES. "}


def velm_text(base: str, category: str, defects: dict) -> str:
    """generate_prompts.py's generate_text_conditioned, from its strings."""
    classes, descriptions = [], []
    for key, value in defects[category].items():
        if key != "normal":
            classes.append(value[0])
            descriptions.append(f"{value[0]}: {value[1]}")
    numbered = ", ".join(f"{i + 1}. {d}" for i, d in enumerate(descriptions))
    text = base.replace("OBJECT", category).replace("NORMAL_DES", defects[category]["normal"][0])
    text = text.replace("NEW_DEFECTS", ", ".join(classes))
    return text + f"The anomaly classes are: {numbered}. Choose the anomaly class of the image. Only return the class name."


def velm_png(path: Path) -> str:
    """run_llm.py: Image.open, resize((448, 448)), save PNG, base64."""
    image = Image.open(path).resize((448, 448))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("utf-8")


def velm_contour(image_path: Path, mask_path: Path, visa: bool) -> np.ndarray:
    """create_contour.py's process_image (before its matplotlib save)."""
    original = np.array(Image.open(image_path).resize((448, 448)))
    if original.ndim == 2:
        original = cv2.cvtColor(original, cv2.COLOR_GRAY2BGR)
    mask = np.array(Image.open(mask_path).resize((448, 448)))
    if visa:
        binary = (mask > 0).astype(np.uint8) * 255
    else:
        _, binary = cv2.threshold(mask, 127, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(original.copy(), contours, -1, (255, 0, 0), 2)


@pytest.fixture
def velm_files() -> Path:
    if not VELM_CLASSES.is_dir():
        pytest.skip(f"VELM's class files not found at {VELM_CLASSES} (../shared is absent in a user's clone)")
    return VELM_CLASSES


@pytest.mark.parametrize("variant", ["raw", "conditioned"])
def test_prompts_of_every_category_of_the_three_real_class_files(velm_files, variant):
    prompt = load_classify_prompt(variant)
    rendered = 0
    for name in FILES:
        defects = json.loads((velm_files / name).read_text())
        class_file = load_class_file(velm_files / name)  # rejected before: not the layout mmad expected
        assert list(class_file.subsets) == list(defects)
        for category in defects:
            described = class_file.for_subset(category)
            assert described.names == tuple(k for k in defects[category] if k != "normal")
            assert prompt.render(category, "ignored subject", described) == velm_text(BASE[variant], category, defects)
            rendered += 1
    assert rendered == 14 + 15 + 12


def write_velm_dataset(root: Path) -> None:
    """MVTec-AC style `cable` (ground_truth/<type>/<name>_mask.png, > 127) and VisA-AC style
    `candle` (groundtruth/<type>/<name>.png, > 0), 120x90 RGB images; masks with soft edges."""
    rng = np.random.default_rng(0)
    for category, kinds, mask_dir, name in (("cable", ("cut", "bent_wire"), "ground_truth", "{i:03d}_mask.png"),
                                            ("candle", ("spot",), "groundtruth", "{i:03d}.png")):
        base = root / "velm_ac" / category
        for folder in ("train/good", "test/good"):
            for i in range(2):
                (base / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(base / folder / f"{i:03d}.png")
        for kind in kinds:
            for i in range(2):
                (base / "test" / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(base / "test" / kind / f"{i:03d}.png")
                mask = np.zeros((90, 120), np.uint8)
                mask[20 + 10 * i:50, 30:70 + 10 * i] = 255
                mask[20 + 10 * i:50, 25:30] = 100  # a soft edge: > 0 but not > 127
                (base / mask_dir / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(base / mask_dir / kind / name.format(i=i))


CLASSES = {"cable": {"normal": ["The cable is round."], "cut": ["cut outer sheath", "A cut."],
                     "bent_wire": ["bent wire", "A bent wire."]},
           "candle": {"normal": ["The candle is white."], "spot": ["red spot", "A red spot."]}}


def test_conditioned_request_with_mask_contours_equals_velm_s(tmp_path, monkeypatch):
    """No system message, the text then reference, query, contour without labels, every image
    448x448 PNG with VELM's bytes, the reference test/good/000.png, temperature 0.0; the contour
    drawn from the ground-truth mask exactly as create_contour.py draws it (MVTec > 127, VisA > 0)."""
    write_velm_dataset(tmp_path / "data")
    classes = tmp_path / "velm_ac_des.json"
    classes.write_text(json.dumps(CLASSES))
    server = WireServer(answer=lambda received: "cut outer sheath").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-velm-0123456789")
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    try:
        assert cli.main(["classify", "--provider", "openai", "--model", "gpt-4o", "--base-url", server.openai_url,
                         "--root", str(tmp_path / "data"), "--dataset", "velm_ac", "--classes", str(classes),
                         "--variant", "conditioned", "--contour-source", "masks", "--out", str(tmp_path / "out"),
                         "-q"]) == 0
    finally:
        server.stop()
    data = tmp_path / "data" / "velm_ac"
    expected = {}
    for category, kinds, visa in (("cable", ("cut", "bent_wire"), False), ("candle", ("spot",), True)):
        text = velm_text(BASE["conditioned"], category, CLASSES)
        for kind in kinds:
            for i in range(2):
                query = data / category / "test" / kind / f"{i:03d}.png"
                expected[velm_png(query)] = (text, velm_png(data / category / "test" / "good" / "000.png"),
                                             category, kind, i, visa)
    assert len(server.requests) == len(expected) == 6
    for received in server.requests:
        body = received.body
        assert set(body) == {"model", "messages", "temperature", "max_tokens"}  # max_tokens: mmad's 128 (see docs)
        assert body["temperature"] == 0.0 and body["model"] == "gpt-4o" and len(body["messages"]) == 1
        (message,) = body["messages"]
        assert message["role"] == "user" and [p["type"] for p in message["content"]] == [
            "text", "image_url", "image_url", "image_url"]
        urls = [p["image_url"]["url"] for p in message["content"][1:]]
        assert all(url.startswith("data:image/png;base64,") and "detail" not in p["image_url"]
                   for url, p in zip(urls, message["content"][1:]))
        text, reference, category, kind, i, visa = expected[urls[1].split(",", 1)[1]]
        assert message["content"][0]["text"] == text and urls[0].split(",", 1)[1] == reference
        folder = "groundtruth" if visa else "ground_truth"
        mask = data / category / folder / kind / (f"{i:03d}.png" if visa else f"{i:03d}_mask.png")
        contour = np.array(Image.open(io.BytesIO(base64.b64decode(urls[2].split(",", 1)[1]))))
        assert contour.shape == (448, 448, 3)
        assert np.array_equal(contour, velm_contour(data / category / "test" / kind / f"{i:03d}.png", mask, visa))
    rows = (tmp_path / "out").glob("*_velm_ac_cable.csv")
    assert {line.split(",")[3] for line in next(rows).read_text().splitlines()[1:]} == {"cut"}  # display -> key


def test_a_one_pixel_region_is_drawn_at_the_visible_minimum(tmp_path):
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(tmp_path / "q.png")
    region = np.zeros((448, 448), np.uint8)
    region[200, 300] = 255
    drawn, count = draw(tmp_path / "q.png", region)
    red = np.argwhere(np.all(drawn == (255, 0, 0), axis=-1))
    assert count == 1 and red.size
    height, width = red.max(0) - red.min(0) + 1
    assert min(height, width) >= MIN_SIDE and abs(red.mean(0) - (200, 300)).max() <= 1.5
    big = np.zeros((448, 448), np.uint8)
    big[100:200, 100:250] = 255
    drawn_big, _ = draw(tmp_path / "q.png", big)  # regions above the minimum: exactly OpenCV's contour
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    plain = np.array(Image.open(tmp_path / "q.png").resize((448, 448)))
    assert np.array_equal(drawn_big, cv2.drawContours(plain.copy(), contours, -1, (255, 0, 0), 2))


def velm_anomaly_vs_defect(rows, mapping, seeds=5):
    """anomaly_vs_defect.py's evaluate on (category, true key, predicted key) rows."""
    classes_of = {obj: [c for c in classes if c != "normal"] for obj, classes in mapping.items()}
    counts = defaultdict(lambda: defaultdict(int))
    for obj, truth, _ in rows:
        shown = mapping.get(obj, {}).get(truth, truth)
        counts[obj][shown[0] if isinstance(shown, list) else shown] += 1
    accuracies = defaultdict(lambda: {"normal": [], "anomaly": [], "defect": []})
    for seed in range(seeds):
        random.seed(seed)
        chosen = {}
        for obj, anomaly_classes in classes_of.items():
            number = 1 if len(anomaly_classes) <= 4 else 2
            ordered = sorted(anomaly_classes, key=lambda c: -counts[obj][c])
            random.shuffle(ordered)
            chosen[obj] = set(ordered[:number])
        tally = defaultdict(lambda: {k: [0, 0] for k in ("normal", "anomaly", "defect")})
        for obj, truth, predicted in rows:
            def category(label):
                return "normal" if label == "good" else "anomaly" if label in chosen[obj] else "defect"
            tally[obj][category(truth)][0] += category(predicted) == category(truth)
            tally[obj][category(truth)][1] += 1
        for obj, cells in tally.items():
            for name, (correct, total) in cells.items():
                accuracies[obj][name].append(correct / total if total else 0)
    mean = {k: np.mean([np.mean(a[k]) for a in accuracies.values()]) for k in ("normal", "anomaly", "defect")}
    std = {k: np.mean([np.std(a[k]) for a in accuracies.values()]) for k in ("normal", "anomaly", "defect")}
    return mean, std


@pytest.mark.parametrize("seed", [0, 1])
def test_grouping_equals_velm_s_on_the_real_class_file(velm_files, seed):
    mapping = json.loads((velm_files / "mvtec_ac_des.json").read_text())
    class_file = load_class_file(velm_files / "mvtec_ac_des.json")
    rng = np.random.default_rng(seed)
    rows = []
    for obj in list(mapping)[: 8 + 3 * seed]:  # some categories only: the draw still walks them all
        keys = [k for k in mapping[obj] if k != "normal"]
        for _ in range(60):
            truth = str(rng.choice(["good"] + keys))
            predicted = truth if rng.random() < 0.7 else str(rng.choice(["good", "unknown"] + keys))
            rows.append((obj, truth, predicted))
    ours_mean, ours_std = velm_group_rows(rows, class_file.order(), class_file.display_names(), 5)
    mean, std = velm_anomaly_vs_defect(rows, mapping)
    for ours, theirs in (("normal", "normal"), ("A", "anomaly"), ("B", "defect")):
        assert ours_mean[ours] == pytest.approx(mean[theirs], abs=1e-15)
        assert ours_std[ours] == pytest.approx(std[theirs], abs=1e-15)
