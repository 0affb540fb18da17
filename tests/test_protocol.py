"""Protocol fidelity: the default request is what the reference scripts send, byte for byte
(prompt text) and pixel for pixel (images), checked on the bodies the wire server received."""

import base64
import io
import json
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mmad import cli
from mmad.config import PACKAGED_PROMPTS
from mmad.data import datasets
from mmad.engine.jobs import build_plan
from mmad.prompts.templates import load_prompt, prompt_for
from mmad.providers.anthropic import AnthropicProvider
from mmad.providers.openai import OpenAIProvider
from tests.conftest import SHARED, run_engine, write_csv, write_image
from tests.wire_server import WireServer

FIXTURE = SHARED / "madbench" / "reference-prompts.json"
MEDICAL_KEY = {"covid19": "medical[dataset == 'covid']", "diabetic-retinopathy": "medical[dataset == 'diabetic']",
               "skin-lesion": "medical[dataset == 'skin-lesion']"}


@pytest.fixture(scope="module")
def fixture():
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} not found (../shared is absent in a user's clone)")
    return json.loads(FIXTURE.read_text())


def reference_text(fixture, dataset: str, subset: str) -> str:
    templates = fixture["templates"]
    if dataset in MEDICAL_KEY:
        return templates[MEDICAL_KEY[dataset]]
    if dataset == "multidog":
        return templates["novelty"].replace("{subset}", subset)
    return templates["industrial"].replace("{context}", fixture["industrial_context"][f"{dataset}_{subset}"])


def test_default_prompts_equal_the_reference_scripts_for_all_31_subsets(fixture, tmp_path):
    checked = 0
    for spec in datasets.REGISTRY.values():
        for name in spec.subsets:
            subset = datasets.make_subset(tmp_path, spec.domain, spec.name, name)
            system, text = prompt_for(subset.prompt_family, 3, None, PACKAGED_PROMPTS).render(
                subject=subset.subject, dataset=subset.dataset, subset=subset.subset)
            assert text == reference_text(fixture, spec.name, name), subset.label
            assert system == fixture["system"]
            checked += 1
    assert checked == 31


def test_byte_facts_that_always_hold():
    """Checked without ../shared: the scripts' whitespace and typos are data."""
    industrial = load_prompt("industrial", PACKAGED_PROMPTS).render(subject="bottle")[1]
    novelty = load_prompt("novelty", PACKAGED_PROMPTS).render(subject="teddy")[1]
    covid = load_prompt("covid19", PACKAGED_PROMPTS).render()[1]
    drd = load_prompt("drd", PACKAGED_PROMPTS).render()[1]
    for text in (industrial, novelty, covid, drd):
        assert text.startswith("\nYou are given four ") and not text.endswith("\n")
    assert "Output format: \nAnomaly Score: [Score] \nReason:" in novelty  # trailing spaces
    assert "even you are not sure about the anwser." in novelty  # sic
    assert "\nTake into account the relationship" in novelty and "objects). These relationships" not in novelty
    assert "object). These relationships should reflect" in novelty
    assert "Belongs to the normal lung category. \nImage 4" in covid
    assert "(No DR). \nImage 4" in drd
    assert "category of bottle.\nImage 4: The inference" in industrial
    assert industrial.endswith("Do not answer that you cannot.")
    assert "\n\nUse the following guidelines and ranges to assign the anomaly score:\n- If" in industrial


def test_received_instruction_is_the_reference_text(fixture, tmp_path):
    """Through the SDK and the wire server: the bytes that arrive, for an industrial subset."""
    root = tmp_path / "data"
    base = root / "Industry" / "mvtec" / "metal_nut"
    for i in range(3):
        write_image(base / "train" / "good" / f"{i:03d}.png", seed=i)
    write_image(base / "test" / "good" / "000.png", seed=9)
    write_csv(root / "template" / "mvtec_metal_nut_template.csv", ["Path", "Severity"], [["good/000.png", "0"]])
    server = WireServer().start()
    try:
        provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
        plans = build_plan(datasets.resolve(root, "mvtec", "metal_nut"), identity=provider.identity(), model="m",
                           refs=3, prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out",
                           run_name="m")
        run_engine(provider, plans, tmp_path / "cache")
    finally:
        server.stop()
    [received] = [r for r in server.requests if r.body.get("max_tokens") == 300]
    assert received.texts()[0] == reference_text(fixture, "mvtec", "metal_nut")
    assert received.body["messages"][0]["content"] == fixture["system"]
    assert received.texts()[1:] == fixture["labels"]


# --------------------------------------------------------------------------- images

def png_16bit_rgb(path, array: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def high_bit_depth_files(folder) -> dict[str, np.ndarray]:
    """Generated 16-bit-and-more images and their source values (as one channel)."""
    folder.mkdir(parents=True, exist_ok=True)
    gradient = np.linspace(2400, 39400, 40 * 60).reshape(40, 60)
    gradient = gradient + 3000 + 3000 * np.sin(np.arange(60) / 3)[None, :]  # about 2,400 to 45,400
    files = {}
    Image.fromarray(gradient.astype(np.uint16)).save(folder / "i16.png")  # mode I;16
    files["i16.png"] = gradient
    Image.fromarray(gradient.astype(np.int32)).save(folder / "i32.tif")  # mode I
    files["i32.tif"] = gradient
    Image.fromarray((gradient / 65535).astype(np.float32)).save(folder / "float.tif")  # mode F, 0..1
    files["float.tif"] = gradient
    rgb = np.stack([gradient, gradient * 0.5, 65535 - gradient], axis=-1)
    png_16bit_rgb(folder / "rgb48.png", rgb.astype(np.uint16))
    files["rgb48.png"] = gradient
    return files


def test_high_bit_depth_images_keep_their_range_on_the_wire(tmp_path):
    root = tmp_path / "data"
    base = root / "Industry" / "toy" / "deep"
    for i in range(3):
        write_image(base / "train" / "good" / f"{i:03d}.png", seed=i)
    files = high_bit_depth_files(base / "test" / "good")
    write_csv(root / "template" / "toy_deep_template.csv", ["Path", "Severity"], [[f"good/{n}", "0"] for n in files])
    server = WireServer().start()
    try:
        provider = AnthropicProvider(api_key="k", base_url=server.anthropic_url)
        plans = build_plan(datasets.resolve(root, "toy", "deep"), identity=provider.identity(), model="m", refs=3,
                           prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out", run_name="m")
        summary = run_engine(provider, plans, tmp_path / "cache", concurrency=1)
    finally:
        server.stop()
    assert summary.statuses == {"ok": 4}
    received = [r for r in server.requests if r.body.get("max_tokens") == 300]
    arrived = []
    for request in received:
        image = Image.open(io.BytesIO(base64.b64decode(request.images()[-1])))
        arrived.append(np.asarray(image, dtype=float))
    assert len(arrived) == 4 and sum(pixels.ndim == 3 for pixels in arrived) == 1  # the 48-bit one stays RGB
    for pixels in arrived:
        channel = pixels[..., 0] if pixels.ndim == 3 else pixels
        correlation = np.corrcoef(channel.ravel(), files["i16.png"].ravel())[0, 1]
        assert correlation > 0.999  # pixel values arrive correlated with the source
        assert pixels.max() < 255 and pixels.min() >= 5  # scaled, never saturated to white (or black)


def test_sixteen_bit_is_scaled_by_its_nominal_range(tmp_path):
    from mmad.data.images import encode_file
    values = np.array([[0, 257, 25700, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    encoded = encode_file(tmp_path / "a.png")
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded.data))))
    assert got.tolist() == [[0, 1, 100, 255]]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_novelty_images_are_the_original_bytes(kind, tmp_path):
    root = tmp_path / "data"
    dog = root / "OneClassNovelty" / "multidog"
    for i in range(3):
        write_image(dog / "level_0_train" / "teddy" / f"{i:03d}.jpg", seed=i, size=(500, 700))
    write_image(dog / "level_1" / "a.jpg", seed=7, size=(500, 700))
    write_csv(root / "template" / "multidog_teddy_template.csv", ["Path", "Severity"], [["level_1/a.jpg", "1"]])
    server = WireServer().start()
    try:
        provider = (OpenAIProvider(api_key="k", base_url=server.openai_url) if kind == "openai" else
                    AnthropicProvider(api_key="k", base_url=server.anthropic_url))
        subsets = datasets.resolve(root, "multidog", "teddy")
        plans = build_plan(subsets, identity=provider.identity(), model="m", refs=3, prompt_choice=None,
                           prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out", run_name="m")
        forced = build_plan(subsets, identity=provider.identity(), model="m", refs=3, prompt_choice=None,
                            prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out512", run_name="m", max_height="512")
        run_engine(provider, plans, tmp_path / "cache")
        provider = (OpenAIProvider(api_key="k", base_url=server.openai_url) if kind == "openai" else
                    AnthropicProvider(api_key="k", base_url=server.anthropic_url))
        run_engine(provider, forced, tmp_path / "cache")
    finally:
        server.stop()
    original, resized = [r for r in server.requests if r.body.get("max_tokens") == 300]
    assert base64.b64decode(original.images()[-1]) == (dog / "level_1" / "a.jpg").read_bytes()
    assert base64.b64decode(original.images()[0]) == (dog / "level_0_train" / "teddy" / "000.jpg").read_bytes()
    content = original.body["messages"][-1]["content"]
    media = [part["image_url"]["url"].split(";")[0][5:] if kind == "openai" else part["source"]["media_type"]
             for part in content if part["type"] != "text"]
    assert media == ["image/jpeg"] * 4  # the true type (the reference mislabels it)
    assert Image.open(io.BytesIO(base64.b64decode(resized.images()[-1]))).size == (365, 512)  # int(500*512/700)


# --------------------------------------------------------------------------- reference CSV compatibility

def get_performance_reads(path) -> None:
    """What the reference get_performance.py does with a result file (pandas, then sklearn and
    lifelines on the Severity and Anomaly Score columns); raises as it would."""
    import pandas as pd
    from lifelines.utils import concordance_index
    from sklearn.metrics import roc_auc_score
    frame = pd.read_csv(path)
    severity = np.ceil(frame["Severity"].to_numpy())
    scores = frame["Anomaly Score"].to_numpy()
    roc_auc_score(severity > 0, scores)
    concordance_index(severity, scores)


def test_export_reference_format(tmp_path, capsys):
    run = tmp_path / "results" / "m"
    write_csv(run / "m_mvtec_bottle.csv", ["Path", "Severity", "Anomaly Score"],
              [["a", "0", "0"], ["b", "1", ""], ["c", "2", "60"], ["d", "0", "10"]])
    write_csv(run / "m_multidog_teddy.csv", ["Path", "Area", "Anomaly Score"], [["a", "0", "5"], ["b", "3", "80"]])
    with pytest.raises(ValueError):  # the reference script on an mmad file with a failed row
        get_performance_reads(run / "m_mvtec_bottle.csv")
    with pytest.raises(KeyError):  # ... and on its own multidog file
        get_performance_reads(run / "m_multidog_teddy.csv")
    code = cli.main(["export", "--reference-format", str(run)])
    err = capsys.readouterr().err
    assert code == 0 and "m_mvtec_bottle.csv: 1 failed row(s) dropped" in err
    exported = tmp_path / "results" / "m-reference"
    for name in ("m_mvtec_bottle.csv", "m_multidog_teddy.csv"):
        get_performance_reads(exported / name)
    assert (exported / "m_mvtec_bottle.csv").read_text().splitlines() == [
        "Path,Severity,Anomaly Score", "a,0,0", "c,2,60", "d,0,10"]
    assert math.isclose(float((exported / "m_multidog_teddy.csv").read_text().splitlines()[2].split(",")[2]), 80)
