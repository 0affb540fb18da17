"""Helpers for the MMAD-QA tests: read the question a request asks, a small generated set, running
`mmad qa run` against the wire server, and a server that answers each question by its number."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from mmad import cli
from mmad.qa.results import read_qa_csv
from tests.wire_server import Received, WireServer

QUESTION = re.compile(r"Question (\d+): ")
OFFICIAL_QUESTION = "Question: "
KEY = "sk-qa-SECRET-0123456789"
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


def start(answer, **kw) -> WireServer:
    return WireServer(answer=answer, **kw).start()


def questions_sent(server):
    """Requests that ask a question (not the opening description of the image)."""
    return [r for r in server.requests if asked(r).number]


def qa_run(server, root, out, *extra, provider="openai"):
    url = server.openai_url if provider == "openai" else server.anthropic_url
    return cli.main(["qa", "run", "--provider", provider, "--base-url", url, "--model", "m", "--root", str(root),
                     "--out", str(out), "-q", *extra])


def rows_of(out):
    return {row.question_id: row for path in sorted(out.glob("*.csv")) for row in read_qa_csv(path)}


CONVERSATION = ("--mode", "conversation", "--prompt", "mmad")  # mmad's numbered questions name each turn


class Replies:
    """Answers "Reply <n>: <first letter>" and remembers what it said to each question of each image."""

    def __init__(self, refuse=()):
        self.said = {}
        self.refuse = set(refuse)
        self.lock = threading.Lock()

    def __call__(self, received):
        question = asked(received)
        if not question.number:
            return "OK"
        if question.number in self.refuse:
            return "Sorry, I cannot assist with that."
        text = f"Reply {question.number}: {sorted(question.options)[0]}"
        with self.lock:
            self.said[question.image, question.number] = text
        return text
