"""Helpers for the MMAD-QA tests: read the question a request asks, and a small generated set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.wire_server import Received

QUESTION = re.compile(r"Question (\d+): ")
OFFICIAL_QUESTION = "Question: "
OPTION = re.compile(r"^([A-E])\. (.*)$", re.MULTILINE)


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def message_images(message: dict) -> int:
    content = message.get("content")
    if isinstance(content, str):
        return 0
    return sum(1 for part in content if part.get("type") in ("image", "image_url"))


@dataclass(frozen=True)
class Asked:
    number: int  # the question's number in its image's conversation (0: not a question)
    options: dict
    image: str  # identifies the query image (sha256 of its base64)


def asked(received: Received) -> Asked:
    """The question in the last user message of a request: numbered by its label ("Question N:",
    mmad's prompt), or, in the published layout ("Question: "), by how many questions the message
    holds (cumulative mode: question i comes with questions 1..i)."""
    text = message_text(received.body["messages"][-1])
    numbers = QUESTION.findall(text)
    count = text.count(OFFICIAL_QUESTION)
    if not numbers and not count:
        return Asked(0, {}, "")
    tail = text[text.rfind("Question"):]
    number = int(numbers[-1]) if numbers else count
    return Asked(number, dict(OPTION.findall(tail)), received.query_id())


def small_set(root: Path) -> Path:
    """15 images (3 categories x 2 normal + 3 defective), 81 questions, with templates."""
    from mmad.qa.synth import synthesize_qa
    synthesize_qa(root, normal=2, defective=3, train=3)
    return root
