import base64
import io

import pytest
from PIL import Image

from mmad.config import PACKAGED_PROMPTS
from mmad.data.images import REFERENCE_SPEC, encode_file, file_ref, prepare_bytes
from mmad.errors import ConfigError
from mmad.prompts.parsing import parse_answer
from mmad.prompts.templates import load_prompt, prompt_for
from tests.conftest import write_image

PROMPTS = PACKAGED_PROMPTS


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text,score,reason", [
    ("Anomaly Score: 45\nReason: a dent on the rim", 45, "a dent on the rim"),
    ("**Anomaly Score:** 70\n**Reason:** crack", 70, "crack"),
    ("Anomaly Score: [12]\nReason: faint", 12, "faint"),
    ("anomaly score: 8", 8, None),
    ("ANOMALY SCORE = 5", 5, None),
    ("Score: 80/100. Reason: big hole", 80, "big hole"),
    ("Score: 85\nReason: dent", 85, "dent"),
    ("Anomaly Score: 45 out of 100", 45, None),
    ("Anomaly Score: 1e2", 100, None),
    ("Anomaly Score: 30-40\nReason: between", 30, "between"),
    ('{"anomaly_score": 33, "reason": "scratch"}', 33, "scratch"),
    ("Anomaly Score: 0\nReason: normal", 0, "normal"),
    ("Anomaly Score: 100", 100, None),
    ("Anomaly Score: 62.5\nReason: x", 62.5, "x"),
])
def test_parse_accepts(text, score, reason):
    parsed = parse_answer(text)
    assert parsed.score == score and parsed.reason == reason


@pytest.mark.parametrize("text,error", [
    ("I cannot determine this.", "no anomaly score"),
    ("Anomaly Score: [Score]\nReason: unsure", "no anomaly score"),
    ("Anomaly Score: 150\nReason: off scale", "outside 0-100"),
    ("Anomaly Score: -3", "outside 0-100"),
    ("Anomaly Score: 7 out of 10", "0-10 scale"),
    ("Anomaly Score: 7/10\nReason: small", "0-10 scale"),
    ("**Score:** 4 / 5", "0-5 scale"),
    ("Confidence score: 0.9", "no anomaly score"),
    ("", "empty"),
    (None, "empty"),
])
def test_parse_failures_are_never_zero(text, error):
    parsed = parse_answer(text)
    assert parsed.score is None and not parsed.ok and error in parsed.error


def test_strict_form_wins_over_lenient():
    assert parse_answer("Score 10/100 at first glance.\nAnomaly Score: 55\nReason: y").score == 55


# --------------------------------------------------------------------------- prompts

FAMILIES = ("industrial", "novelty", "drd", "covid19", "skin-lesion")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_script_paper_and_zero_shot_prompts(family):
    script, paper, zero = (load_prompt(n, PROMPTS) for n in (family, f"{family}-paper", f"{family}-zeroshot"))
    assert script.refs == paper.refs == 3 and zero.refs == 0
    for prompt in (script, paper, zero):
        system, text = prompt.render(subject="thing", dataset="d", subset="s")
        assert system == "You are a helpful assistant that responds in detecting anomalies on images in various context."
        assert "Anomaly Score: [Score]" in text and "$" not in text
    assert "Image 1, 2, 3" not in zero.render(subject="x")[1]


def test_script_variants_differ_from_the_paper_as_documented():
    industrial = load_prompt("industrial", PROMPTS).render(subject="bottle")[1]
    assert industrial.endswith("even if you are not entirely certain about the answer. Do not answer that you cannot.")
    assert not load_prompt("industrial-paper", PROMPTS).render(subject="bottle")[1].endswith("you cannot.")
    novelty = load_prompt("novelty", PROMPTS).render(subject="golden_retriever")[1]
    assert "Image 2: Also belongs to the normal class golden_retriever." in novelty
    assert novelty.endswith("even you are not sure about the anwser.")
    assert load_prompt("covid19", PROMPTS).render()[1].endswith("Do not answer that you can not.")


def test_missing_variable_is_an_error_before_sending():
    prompt = load_prompt("industrial", PROMPTS)
    with pytest.raises(ConfigError, match="needs variable"):
        prompt.render()


def test_prompt_file_with_unknown_variable(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('system = "s"\ninstruction = "Rate $thing"\n')
    with pytest.raises(ConfigError, match="unknown variable"):
        load_prompt(str(path), PROMPTS)
    path.write_text('system = "s"\ninstruction = "Rate $subject please"\nrefs = 3\n')
    assert load_prompt(str(path), PROMPTS).render(subject="x")[1] == "Rate x please"


def test_prompt_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown prompt 'nope'"):
        load_prompt("nope", PROMPTS)
    bad = tmp_path / "bad.toml"
    bad.write_text('system = "s"\n')
    with pytest.raises(ConfigError, match="'instruction' is missing"):
        load_prompt(str(bad), PROMPTS)
    fixed = tmp_path / "fixed.toml"
    fixed.write_text('system = "s"\ninstruction = "Three references: Image 1, 2, 3."\nrefs = 3\n')
    with pytest.raises(ConfigError, match="describes 3 reference"):
        prompt_for("industrial", 2, str(fixed), PROMPTS)  # a fixed text does not adapt
    assert prompt_for("industrial", 3, str(fixed), PROMPTS).name == "fixed"
    with pytest.raises(ConfigError, match="describes 0 reference"):
        prompt_for("industrial", 2, "industrial-zeroshot", PROMPTS)
    assert prompt_for("drd", 0, None, PROMPTS).name == "drd-zeroshot"
    assert prompt_for("industrial", 0, "industrial-paper", PROMPTS).name == "industrial-zeroshot"
    with pytest.raises(ConfigError, match="prompt family cannot be inferred"):
        prompt_for(None, 3, None, PROMPTS)


def test_plan_options_default_to_the_packaged_prompts():
    from mmad.engine.jobs import PlanOptions
    opts = PlanOptions({"provider": "openai"}, "gpt-4o")  # once prompts_dir=None: an AttributeError on use
    assert prompt_for("industrial", opts.refs, opts.prompt_choice, opts.prompts_dir).name == "industrial"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_packaged_prompts_adapt_to_the_number_of_references(family, k):
    for name in (family, f"{family}-paper"):
        text = prompt_for(family, k, name, PROMPTS).render(refs=k, subject="widget")[1]
        words = {2: "two", 3: "three", 5: "five", 6: "six"}
        assert f"You are given {words[k + 1]} " in text and f"Image {k + 1}: The inference image" in text
        assert f"Image {k + 2}" not in text and "Image 1" in text
        if k > 1 and "Also belongs" not in text:
            assert f"Image {', '.join(str(i) for i in range(1, k + 1))}:" in text


# --------------------------------------------------------------------------- images

def png_size(data: str):
    return Image.open(io.BytesIO(base64.b64decode(data))).size


def test_tall_images_are_downscaled_to_512_and_small_kept(tmp_path):
    write_image(tmp_path / "tall.png", size=(1000, 2000))
    write_image(tmp_path / "small.png", size=(640, 480))
    tall, small = encode_file(tmp_path / "tall.png"), encode_file(tmp_path / "small.png")
    assert png_size(tall.data) == (256, 512) and (tall.width, tall.height) == (256, 512)
    assert png_size(small.data) == (640, 480)


@pytest.mark.parametrize("size,width", [((320, 560), 292), ((1003, 1024), 501), ((300, 1024), 150),
                                        ((561, 561), 511), ((1122, 561), 1023), ((161, 644), 127)])
def test_new_width_is_truncated_as_the_reference_computes_it(tmp_path, size, width):
    write_image(tmp_path / "tall.png", size=size)
    assert width == int(size[0] * (512 / size[1]))  # the scripts' expression: the ratio first, then truncation
    assert png_size(encode_file(tmp_path / "tall.png").data) == (width, 512)


def test_the_width_rule_differs_from_the_rounded_product_where_the_scripts_do():
    """For square sizes 513-4096 the scripts' `int(w * (512 / h))` and `int(w * 512 / h)` differ
    470 times; mmad follows the scripts in every one of them."""
    from mmad.data.images import resized_size
    differ = [w for w in range(513, 4097) if int(w * (512 / w)) != int(w * 512 / w)]
    assert len(differ) == 470 and 561 in differ
    assert all(resized_size(w, w, 512) == (int(w * (512 / w)), 512) for w in range(513, 4097))
    assert resized_size(561, 561, 512) == (511, 512)


def test_resampling_is_lanczos(tmp_path):
    write_image(tmp_path / "tall.png", size=(300, 1024))
    source = Image.open(tmp_path / "tall.png")
    expected = source.resize((150, 512), Image.Resampling.LANCZOS)
    got = Image.open(io.BytesIO(base64.b64decode(encode_file(tmp_path / "tall.png").data)))
    assert got.tobytes() == expected.tobytes()


def test_compress_level_changes_bytes_not_pixels_or_identity(tmp_path):
    write_image(tmp_path / "a.png", size=(600, 700))
    raw = (tmp_path / "a.png").read_bytes()
    fast, *_ = prepare_bytes(raw, REFERENCE_SPEC, 1)
    small, *_ = prepare_bytes(raw, REFERENCE_SPEC, 9)
    assert Image.open(io.BytesIO(fast)).tobytes() == Image.open(io.BytesIO(small)).tobytes()
    assert (encode_file(tmp_path / "a.png", REFERENCE_SPEC, 1).ref == encode_file(tmp_path / "a.png", REFERENCE_SPEC, 9).ref
            == file_ref(tmp_path / "a.png"))
    assert file_ref(tmp_path / "a.png").spec == REFERENCE_SPEC.token


def test_cmyk_jpeg_becomes_rgb_png(tmp_path):
    Image.new("CMYK", (10, 10)).save(tmp_path / "c.jpg")
    encoded = encode_file(tmp_path / "c.jpg")
    assert Image.open(io.BytesIO(base64.b64decode(encoded.data))).mode == "RGB"
