"""MMAD-QA conversations (`--mode conversation`: earlier questions and the model's own replies as
turns) through the real SDKs against the wire server: the turns, a failed turn ending the chain,
a parse_failed turn kept, resume after kill -9, and batch mode asking turn i in round i."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from mmad.results.files import JsonlLog
from tests.qa_support import (
    CONVERSATION,
    Replies,
    asked,
    message_images,
    message_text,
    qa_run,
    questions_sent,
    rows_of,
    start,
)

# --------------------------------------------------------------------------- conversations (mode conversation)

@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_conversation_turns_carry_the_models_own_earlier_answers(qa_set, qa_env, provider):
    replies = Replies()
    server = start(replies)
    out = qa_env / "out"
    try:
        assert qa_run(server, qa_set, out, *CONVERSATION, "--sample", "2", "--shots", "2",
                      provider=provider) == 0
    finally:
        server.stop()
    sent = questions_sent(server)
    assert sent and max(asked(r).number for r in sent) == 7
    for request in sent:
        question = asked(request)
        messages = [m for m in request.body["messages"] if m["role"] != "system"]
        assert len(messages) == 2 * question.number - 1  # i-1 earlier question/answer pairs, then question i
        assistants = [message_text(m) for m in messages if m["role"] == "assistant"]
        assert assistants == [replies.said[question.image, k] for k in range(1, question.number)]
        users = [m for m in messages if m["role"] == "user"]
        assert message_images(users[0]) == 3 and all(message_images(m) == 0 for m in users[1:])
        assert [f"Question {k}:" in message_text(m) for k, m in enumerate(users, start=1)] == [True] * len(users)
    assert all(row.status == "ok" for row in rows_of(out).values())
    assert len(rows_of(out)) == len(sent)  # each question asked once


def test_a_failed_turn_ends_the_chain_and_retry_failed_goes_on(qa_set, qa_env):
    replies = Replies(refuse={2})
    server = start(replies)
    out = qa_env / "out"
    args = (*CONVERSATION, "--dataset", "Synth-Gravel")
    try:
        assert qa_run(server, qa_set, out, *args) == 6
        first = questions_sent(server)
        assert Counter(asked(r).number for r in first) == {1: 5, 2: 25}  # 5 requests in all; nothing after
        rows = rows_of(out)
        later = [r for r in rows.values() if int(r.question_id.rsplit("#", 1)[1]) > 2]
        assert later and all(r.status == "error" and r.note.startswith("not asked") for r in later)
        replies.refuse.clear()
        server.requests.clear()
        assert qa_run(server, qa_set, out, *args, "--retry-failed") == 0
        second = questions_sent(server)
    finally:
        server.stop()
    numbers = Counter(asked(r).number for r in second)
    assert 1 not in numbers and numbers[2] == 5 and numbers[3] == 5 and sum(numbers.values()) == 27 - 5
    assert all(row.status == "ok" for row in rows_of(out).values())


def test_a_parse_failed_turn_stays_in_the_conversation_and_retry_rereads_it_free(qa_set, qa_env):
    class Garbled(Replies):
        def __call__(self, received):
            text = super().__call__(received)
            return "hmm, hard to say" if asked(received).number == 2 else text
    server = start(Garbled())
    out = qa_env / "out"
    args = (*CONVERSATION, "--dataset", "Synth-Gravel")
    try:
        assert qa_run(server, qa_set, out, *args) == 6
        third = [r for r in questions_sent(server) if asked(r).number == 3]
        assert len(third) == 5 and all(message_text(r.body["messages"][-2]) == "hmm, hard to say" for r in third)
        records_before = sum(len(JsonlLog.read(p)) for p in out.glob("*.jsonl"))
        server.requests.clear()
        assert qa_run(server, qa_set, out, *args, "--retry-failed") == 6  # the same replies, read again
        assert not questions_sent(server)  # from the response cache: nothing paid again
    finally:
        server.stop()
    assert sum(len(JsonlLog.read(p)) for p in out.glob("*.jsonl")) == records_before + 5  # only the 5 turns 2
    failed = [r for r in rows_of(out).values() if r.status != "ok"]
    assert len(failed) == 5 and all(r.question_id.endswith("#2") and r.status == "parse_failed" for r in failed)


def test_killed_conversation_run_resumes_without_paying_twice(qa_set, qa_env):
    server = start(Replies(), latency=0.05)
    out = qa_env / "out"
    base = [sys.executable, "-m", "mmad.cli", "qa", "run", "--provider", "openai", "--base-url", server.openai_url,
            "--model", "m", "--root", str(qa_set), "--out", str(out), "-q", *CONVERSATION,
            "--dataset", "Synth-Textures", "--concurrency", "2"]
    try:
        proc = subprocess.Popen(base, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(server.paid) < 20:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        first = {json.dumps(r.body, sort_keys=True) for r in server.paid if asked(r).number}
        answered_before = sum(1 for p in out.glob("*.jsonl") for _ in JsonlLog.read(p))
        assert 0 < answered_before < 54
        server.requests.clear()
        server.paid.clear()
        assert qa_run(server, qa_set, out, *CONVERSATION, "--dataset", "Synth-Textures") == 0
        second = [json.dumps(r.body, sort_keys=True) for r in questions_sent(server)]
    finally:
        server.stop()
    assert len(set(second) & first) <= 2  # at most the requests in flight at the kill
    rows = rows_of(out)
    assert len(rows) == 54 and all(row.status == "ok" for row in rows.values())
    assert len(second) <= 54 - answered_before + 2


def test_batch_mode_asks_turn_i_of_every_image_in_round_i(qa_set, qa_env):
    server = start(Replies())
    server.batch_polls_until_done = 1
    out = qa_env / "out"
    try:
        assert qa_run(server, qa_set, out, *CONVERSATION, "--dataset", "Synth-Gravel", "--batch",
                      "--poll-interval", "0.01") == 0
    finally:
        server.stop()
    assert all(row.status == "ok" for row in rows_of(out).values()) and len(rows_of(out)) == 27
    states = json.loads((out / "batches.json").read_text())["batches"]
    assert [len(b["keys"]) for b in states] == [5, 5, 5, 3, 3, 3, 3]  # 2 normal images have 3 questions


def test_batch_mode_records_a_chain_end_without_sending_it(qa_set, qa_env):
    server = start(Replies(refuse={2}))
    server.batch_polls_until_done = 1
    out = qa_env / "out"
    try:
        assert qa_run(server, qa_set, out, *CONVERSATION, "--dataset", "Synth-Gravel", "--batch",
                      "--poll-interval", "0.01") == 6
    finally:
        server.stop()
    assert {asked(r).number for r in server.requests if asked(r).number} == {1, 2}
    assert not any("(not asked)" in message_text(m) for r in server.requests for m in r.body.get("messages", []))
    rows = rows_of(out)
    assert Counter(r.status for r in rows.values()) == {"ok": 5, "refused": 5, "error": 17}  # no re-asks in a batch
    states = json.loads((out / "batches.json").read_text())["batches"]
    assert [len(b["keys"]) for b in states] == [5, 5]
