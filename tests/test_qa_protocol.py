"""MMAD-QA requests byte for byte: the requests of MMAD's published GPT-4o script (gpt4o.py),
rendered here from its strings and its image calls, written independently of mmad, against the
bodies the wire server received from `mmad qa run` — text bytes, roles, part order, fields
present, image sizes and bytes — in cumulative and single mode, with templates and refusals."""

import base64
import json
import threading
from collections import Counter

import cv2
import numpy as np
import pytest

from mmad import cli
from mmad.qa.data import load_benchmark
from tests.qa_support import asked, small_set
from tests.wire_server import WireServer

# gpt4o.py's module-level `instruction` (a triple-quoted string: it starts and ends with a newline)
INSTRUCTION = """
You are an industrial inspector who checks products by images. You should judge whether there is a defect in the query image and answer the questions about it.
Answer with the option's letter from the given choices directly!

Finally, you should output a list of answer, such as:
1. Answer: B.
2. Answer: B.
3. Answer: A.
...
"""


def official_text(questions: list[dict], shots: int) -> str:
    """The one text part of gpt4o.py's request for `questions` (its parse_conversation + get_query)."""
    incontext = f"The first {shots} image is the normal sample, which can be used as a template to compare." \
        if shots else ""
    conversation_text = ""
    for question in questions:
        options_text = "".join(f"{key}. {value}\n" for key, value in question["Options"].items())
        conversation_text += f"Question: {question['Question']} \n{options_text}" + "\n"
    return (INSTRUCTION + incontext + "The last image is the query image" + "Following is the question list: "
            + "\n" + conversation_text)


def official_image_part(path) -> dict:
    """cv2.imread, scale = min(512 / w, 512 / h) (enlarging too), INTER_AREA, imencode('.jpg'); the
    media type from the file name."""
    image = cv2.imread(str(path))
    height, width = image.shape[:2]
    scale = min(512 / width, 512 / height)
    resized = cv2.resize(image, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA)
    _, encoded = cv2.imencode(".jpg", resized)
    name = str(path).lower()
    mime = "image/png" if name.endswith(".png") else "image/jpeg"
    data = base64.b64encode(encoded).decode("utf-8")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}", "detail": "low"}}


def official_payload(root, image: str, entry: dict, index: int, shots: int, model: str, cumulative: bool) -> dict:
    questions = entry["conversation"][:index + 1] if cumulative else entry["conversation"][index:index + 1]
    few_shot = [root / path for path in entry["random_templates"][:shots]]
    content = [official_image_part(path) for path in few_shot] + [official_image_part(root / image)]
    content.append({"type": "text", "text": official_text(questions, shots)})
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 200}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return small_set(tmp_path_factory.mktemp("qa-protocol"))


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-qa-protocol-0123456789")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-qa-protocol-0123456789")
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def decoded(url: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)


def identity(body: dict) -> tuple[str, str]:
    """(text part, query image URL): one per image and question."""
    content = body["messages"][-1]["content"]
    return content[-1]["text"], content[-2]["image_url"]["url"]


def by_identity(received) -> dict:
    return {identity(r.body): r.body for r in received}


def expected_bodies(root, shots: int, cumulative: bool, dataset: str, model: str = "m") -> dict:
    annotation = json.loads((root / "mmad.json").read_text())
    out = {}
    for image, entry in annotation.items():
        if not image.startswith(dataset + "/"):
            continue
        for index in range(len(entry["conversation"])):
            body = official_payload(root, image, entry, index, shots, model, cumulative)
            out[identity(body)] = body
    return out


@pytest.mark.parametrize("mode, shots", [("cumulative", 1), ("single", 2), ("cumulative", 0)])
def test_requests_equal_the_official_script_s(generated, env, mode, shots):
    """Every request equals gpt4o.py's payload for the same question: the same JSON (no system
    message, no temperature, max_tokens 200, detail low, one user message of templates, query,
    then the text), the same text bytes and the same JPEG bytes (OpenCV on both sides)."""
    server = WireServer(answer=lambda received: "1. Answer: A.").start()
    out = env / "out"
    dataset = "Synth-Gravel"  # 640x400 images: fitted to 512x320; Synth-Textures (256x256) below
    try:
        assert cli.main(["qa", "run", "--provider", "openai", "--base-url", server.openai_url, "--model", "m",
                         "--root", str(generated), "--out", str(out), "-q", "--dataset", dataset, "--mode", mode,
                         "--shots", str(shots)]) == 0
    finally:
        server.stop()
    expected = expected_bodies(generated, shots, mode == "cumulative", dataset)
    received = by_identity(server.requests)
    assert len(server.requests) == len(expected) == 27
    assert received.keys() == expected.keys()  # every text byte for byte
    for key, body in expected.items():
        assert received[key] == body  # roles, part order, fields present, image bytes and media types
    sizes = {decoded(part["image_url"]["url"]).shape[:2]
             for body in received.values() for part in body["messages"][0]["content"] if part["type"] == "image_url"}
    assert sizes == {(320, 512)}


def test_small_images_are_enlarged_and_refusals_asked_five_times(generated, env):
    """256x256 images go out as 512x512 JPEG (gpt4o.py enlarges); a refused question is asked 5
    times in all with the same body, and the image's later questions are still asked."""
    lock, seen = threading.Lock(), Counter()

    def answer(received):
        question = asked(received)
        with lock:
            seen[question.number] += 1
        return "Sorry, I cannot assist with that." if question.number == 2 else "Answer: B."
    server = WireServer(answer=answer).start()
    out = env / "out"
    try:
        assert cli.main(["qa", "run", "--provider", "openai", "--base-url", server.openai_url, "--model", "m",
                         "--root", str(generated), "--out", str(out), "-q", "--dataset", "Synth-Textures",
                         "--sample", "2", "--seed", "1"]) == 6
    finally:
        server.stop()
    bench = load_benchmark(generated, datasets=["Synth-Textures"], sample=2, seed=1)
    expected = {}
    for entry in bench.entries:
        annotation = json.loads((generated / "mmad.json").read_text())[entry.image]
        for index in range(len(entry.questions)):
            body = official_payload(generated, entry.image, annotation, index, 1, "m", True)
            expected[identity(body)] = body
    sent = Counter(identity(r.body) for r in server.requests)
    assert set(sent) == set(expected)
    for (text, _), count in sent.items():
        assert count == (5 if text.count("Question: ") == 2 else 1)  # question 2 refused: 5 requests in all
    assert all(r.body == expected[identity(r.body)] for r in server.requests)
    questions = sum(len(entry.questions) for entry in bench.entries)
    assert seen[3] == len(bench.entries) and sum(seen.values()) == questions + 4 * len(bench.entries)
    first = server.requests[0].body["messages"][0]["content"][0]["image_url"]["url"]
    assert decoded(first).shape[:2] == (512, 512) and first.startswith("data:image/png;base64,/9j/")  # JPEG bytes, .png name


def test_anthropic_gets_the_same_text_and_jpeg_bytes_labelled_as_jpeg(generated, env):
    """Anthropic checks media types, so the JPEG bytes are labelled image/jpeg there; no system,
    no temperature, the same text and image bytes as the official request."""
    server = WireServer(answer=lambda received: "A").start()
    out = env / "out"
    try:
        assert cli.main(["qa", "run", "--provider", "anthropic", "--base-url", server.anthropic_url, "--model", "m",
                         "--root", str(generated), "--out", str(out), "-q", "--dataset", "Synth-Gravel",
                         "--sample", "1"]) == 0
    finally:
        server.stop()
    expected = {key[0] + key[1].split(",", 1)[1]: body
                for key, body in expected_bodies(generated, 1, True, "Synth-Gravel").items()}
    assert server.requests
    for received in server.requests:
        body = received.body
        assert "system" not in body and "temperature" not in body and body["max_tokens"] == 200
        (message,) = body["messages"]
        official = expected[message["content"][-1]["text"] + message["content"][-2]["source"]["data"]]
        official = official["messages"][0]["content"]
        assert message["content"][-1]["text"] == official[-1]["text"]
        assert [b["type"] for b in message["content"]] == ["image", "image", "text"]
        for block, part in zip(message["content"][:2], official[:2]):
            assert block["source"]["media_type"] == "image/jpeg"
            assert block["source"]["data"] == part["image_url"]["url"].split(",", 1)[1]
