"""`mmad qa run` through the real SDKs against the local wire server, answering by the question
it receives: letters, prose with a letter, option text, refusals, garbage. Single questions,
cumulative conversations, failed turns, resume after kill -9, batch mode, estimates."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from mmad import cli
from mmad.qa.results import read_qa_csv
from mmad.results.files import JsonlLog
from tests.qa_support import asked, message_images, message_text, small_set
from tests.wire_server import WireServer, decode_image

KEY = "sk-qa-SECRET-0123456789"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return small_set(tmp_path_factory.mktemp("qa-set"))


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def start(answer, **kw):
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


# --------------------------------------------------------------------------- single questions

def test_a_refusal_cut_short_by_a_stop_keeps_its_re_ask_allowance(generated, env):
    """A stop between re-asks leaves the question to-do; the resume asks it again only as often
    as the reference's limit (1 + 5) still allows, counting the re-asks logged before the stop."""
    server = start(Behaviours())
    out = env / "out"
    try:
        assert qa_run(server, generated, out, "--concurrency", "4") == 6
        sixes = [r for r in questions_sent(server) if asked(r).number == 6]
        assert len(sixes) == 6 * 9  # 9 defective images, question 6 refused 1 + 5 times each
        # as if the run had been stopped after the 3rd re-ask of every question 6: drop what followed
        for path in out.glob("*.jsonl"):
            kept, reasked = [], Counter()
            for line in path.read_text().splitlines():
                record = json.loads(line)
                qid = record.get("question_id", "")
                if qid.endswith("#6"):
                    reasked[qid] += 1
                    if reasked[qid] > 3:
                        continue
                kept.append(line)
            path.write_text("".join(f"{line}\n" for line in kept))
        server.requests.clear()
        assert qa_run(server, generated, out, "--concurrency", "4") == 6
        sixes = [r for r in questions_sent(server) if asked(r).number == 6]
        assert len(sixes) == 3 * 9  # 2 re-asks left + the ask itself, per question
        assert {asked(r).number for r in questions_sent(server)} == {6}  # nothing else asked again
    finally:
        server.stop()


class Behaviours:
    """Question 1: a letter; 2: prose with a letter; 3: a refusal, then a letter; 4: an option's text;
    5: prose without a letter or option; 6: refusals only; 7: a letter that is not an option."""

    def __init__(self):
        self.seen = Counter()
        self.lock = threading.Lock()

    def __call__(self, received):
        question = asked(received)
        if not question.number:
            return "OK"
        with self.lock:
            self.seen[question.image, question.number] += 1
            times = self.seen[question.image, question.number]
        letters = sorted(question.options)
        return {1: letters[0],
                2: f"Looking closely at the image, the answer is {letters[-1]}.",
                3: "Sorry, I'm not sure." if times == 1 else letters[min(2, len(letters) - 1)],
                4: question.options[letters[-1]].lower(),
                5: "hmm, hard to say for sure",
                6: "Sorry, I cannot assist with that.",
                7: "E"}[question.number]


def test_single_questions_end_to_end(generated, env, capsys):
    server = start(Behaviours())
    out = env / "out"
    try:
        assert qa_run(server, generated, out, "--concurrency", "4") == 6  # finished, with failed answers
    finally:
        server.stop()
    rows = rows_of(out)
    assert len(rows) == 81
    bench_answers = {}
    for path in sorted(out.glob("*.jsonl")):
        for record in JsonlLog.read(path):
            bench_answers.setdefault(record["question_id"], []).append(record)
    for qid, row in rows.items():
        number = int(qid.rsplit("#", 1)[1])
        records = bench_answers[qid]
        final = [r for r in records if r["status"] != "reasked"]
        assert len(final) == 1
        if number in (1, 2, 3, 4):
            assert row.status == "ok" and row.predicted == final[0]["letter"]
        if number == 3:  # one refusal re-asked, then a letter: the record is ok
            assert [r["status"] for r in records] == ["reasked", "ok"] and final[0]["attempts"] == 2  # 2 paid
        if number == 4:
            assert final[0]["match"] == "option text" and final[0]["similarity"] == 1.0
        if number in (5, 7):
            assert row.status == "parse_failed" and row.predicted is None and final[0]["raw"]
        if number == 6:  # 1 + 5 re-asks, then refused for good
            assert row.status == "refused" and [r["status"] for r in records] == ["reasked"] * 5 + ["refused"]
    sent = questions_sent(server)
    per_question = Counter(asked(r).number for r in sent)
    defective, normal = 9, 6
    assert per_question == {1: 15, 2: 15, 3: 30, 4: defective, 5: defective, 6: 6 * defective, 7: defective}
    assert len({json.dumps(r.body, sort_keys=True) for r in sent if asked(r).number == 3}) == 15  # re-asks: same body
    # every request: the k=1 template and the query, each fitted into 512x512 (640x400 -> 512x320), detail
    # low, max_tokens 200, temperature 0
    sizes = set()
    for request in sent:
        images = [p for p in request.body["messages"][-1]["content"] if p["type"] == "image_url"]
        assert len(images) == 2 and all(p["image_url"]["detail"] == "low" for p in images)
        assert request.body["max_tokens"] == 200 and request.body["temperature"] == 0
        pair = {decode_image(p["image_url"]["url"].split(",", 1)[1]).size for p in images}
        assert len(pair) == 1  # template and query of one category
        sizes |= pair
    assert sizes == {(256, 256), (512, 320)}
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "mllm" and info["settings"]["task"] == "qa" and info["settings"]["mode"] == "single"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"]["total"] == 81 and summary["jobs"]["failed"] == 3 * defective  # questions 5, 6, 7
    assert normal == 6

    # mmad eval --task qa against a computation from the CSV rows written out by hand
    capsys.readouterr()
    assert cli.main(["eval", "--task", "qa", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    table = {row["dataset"]: row for row in report["runs"][info["run"]]}
    answered = [r for r in rows.values() if r.status == "ok"]
    for dataset in ("Synth-Textures", "Synth-Gravel"):
        mine = [r for r in answered if r.image.startswith(dataset + "/")]
        normal_ad = [r for r in mine if r.subtask == "Anomaly Detection" and "good" in r.image]
        anomalous_ad = [r for r in mine if r.subtask == "Anomaly Detection" and "good" not in r.image]
        n_acc = sum(r.predicted == r.correct for r in normal_ad) / len(normal_ad)
        a_acc = sum(r.predicted == r.correct for r in anomalous_ad) / len(anomalous_ad)
        cells = {"Anomaly Detection": (n_acc + a_acc) / 2}
        for column, names in (("Defect Classification", ("Defect Classification",)),
                              ("Defect Localization", ("Defect Localization",)),
                              ("Defect Description", ("Defect Description",)),
                              ("Object Classification", ("Object Classification",)),
                              ("Object Analysis", ("Object Structure", "Object Details"))):
            group = [r for r in mine if r.subtask in names]
            if group:
                cells[column] = sum(r.predicted == r.correct for r in group) / len(group)
        got = table[dataset]
        for column, value in cells.items():
            assert got["subtasks"][column]["accuracy"] == pytest.approx(value, abs=1e-6)
        assert got["subtasks"]["Defect Analysis"]["accuracy"] is None  # every answer there failed
        assert got["average"] == pytest.approx(sum(cells.values()) / len(cells), abs=1e-6)
        assert got["overkill"] == pytest.approx(1 - n_acc, abs=1e-6) and got["miss"] == pytest.approx(1 - a_acc, abs=1e-6)
        assert sum(got["failed"].values()) == sum(1 for r in rows.values() if r.image.startswith(dataset + "/")
                                                  and r.status != "ok")
    assert "27 failed answer(s) (parse_failed 18, refused 9) are left out of every accuracy" in captured.err


# --------------------------------------------------------------------------- cumulative conversations

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


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_cumulative_turns_carry_the_models_own_earlier_answers(generated, env, provider):
    replies = Replies()
    server = start(replies)
    out = env / "out"
    try:
        assert qa_run(server, generated, out, "--mode", "cumulative", "--sample", "2", "--shots", "2",
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


def test_a_failed_turn_ends_the_chain_and_retry_failed_goes_on(generated, env):
    replies = Replies(refuse={2})
    server = start(replies)
    out = env / "out"
    args = ("--mode", "cumulative", "--dataset", "Synth-Gravel")
    try:
        assert qa_run(server, generated, out, *args) == 6
        first = questions_sent(server)
        assert Counter(asked(r).number for r in first) == {1: 5, 2: 30}  # 1 + 5 re-asks; nothing after
        rows = rows_of(out)
        later = [r for r in rows.values() if int(r.question_id.rsplit("#", 1)[1]) > 2]
        assert later and all(r.status == "error" and r.note.startswith("not asked") for r in later)
        replies.refuse.clear()
        server.requests.clear()
        assert qa_run(server, generated, out, *args, "--retry-failed") == 0
        second = questions_sent(server)
    finally:
        server.stop()
    numbers = Counter(asked(r).number for r in second)
    assert 1 not in numbers and numbers[2] == 5 and numbers[3] == 5 and sum(numbers.values()) == 27 - 5
    assert all(row.status == "ok" for row in rows_of(out).values())


def test_a_parse_failed_turn_stays_in_the_conversation_and_retry_rereads_it_free(generated, env):
    class Garbled(Replies):
        def __call__(self, received):
            text = super().__call__(received)
            return "hmm, hard to say" if asked(received).number == 2 else text
    server = start(Garbled())
    out = env / "out"
    args = ("--mode", "cumulative", "--dataset", "Synth-Gravel")
    try:
        assert qa_run(server, generated, out, *args) == 6
        third = [r for r in questions_sent(server) if asked(r).number == 3]
        assert len(third) == 5 and all(message_text(r.body["messages"][-2]) == "hmm, hard to say" for r in third)
        records_before = sum(len(JsonlLog.read(p)) for p in out.glob("*.jsonl"))
        server.requests.clear()
        assert qa_run(server, generated, out, *args, "--retry-failed") == 6  # the same replies, read again
        assert not questions_sent(server)  # from the response cache: nothing paid again
    finally:
        server.stop()
    assert sum(len(JsonlLog.read(p)) for p in out.glob("*.jsonl")) == records_before + 5  # only the 5 turns 2
    failed = [r for r in rows_of(out).values() if r.status != "ok"]
    assert len(failed) == 5 and all(r.question_id.endswith("#2") and r.status == "parse_failed" for r in failed)


def test_killed_cumulative_run_resumes_without_paying_twice(generated, env):
    server = start(Replies(), latency=0.05)
    out = env / "out"
    base = [sys.executable, "-m", "mmad.cli", "qa", "run", "--provider", "openai", "--base-url", server.openai_url,
            "--model", "m", "--root", str(generated), "--out", str(out), "-q", "--mode", "cumulative",
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
        assert qa_run(server, generated, out, "--mode", "cumulative", "--dataset", "Synth-Textures") == 0
        second = [json.dumps(r.body, sort_keys=True) for r in questions_sent(server)]
    finally:
        server.stop()
    assert len(set(second) & first) <= 2  # at most the requests in flight at the kill
    rows = rows_of(out)
    assert len(rows) == 54 and all(row.status == "ok" for row in rows.values())
    assert len(second) <= 54 - answered_before + 2


def test_batch_mode_asks_turn_i_of_every_image_in_round_i(generated, env):
    server = start(Replies())
    server.batch_polls_until_done = 1
    out = env / "out"
    try:
        assert qa_run(server, generated, out, "--mode", "cumulative", "--dataset", "Synth-Gravel", "--batch",
                      "--poll-interval", "0.01") == 0
    finally:
        server.stop()
    assert all(row.status == "ok" for row in rows_of(out).values()) and len(rows_of(out)) == 27
    states = json.loads((out / "batches.json").read_text())["batches"]
    assert [len(b["keys"]) for b in states] == [5, 5, 5, 3, 3, 3, 3]  # 2 normal images have 3 questions


def test_batch_mode_records_a_chain_end_without_sending_it(generated, env):
    server = start(Replies(refuse={2}))
    server.batch_polls_until_done = 1
    out = env / "out"
    try:
        assert qa_run(server, generated, out, "--mode", "cumulative", "--dataset", "Synth-Gravel", "--batch",
                      "--poll-interval", "0.01") == 6
    finally:
        server.stop()
    assert {asked(r).number for r in server.requests if asked(r).number} == {1, 2}
    assert not any("(not asked)" in message_text(m) for r in server.requests for m in r.body.get("messages", []))
    rows = rows_of(out)
    assert Counter(r.status for r in rows.values()) == {"ok": 5, "refused": 5, "error": 17}  # no re-asks in a batch
    states = json.loads((out / "batches.json").read_text())["batches"]
    assert [len(b["keys"]) for b in states] == [5, 5]


# --------------------------------------------------------------------------- estimate and dry run

def test_estimate_and_dry_run_send_nothing_and_count_what_is_left(generated, env, capsys):
    server = start(Replies())
    out = env / "out"
    args = ["--provider", "openai", "--base-url", server.openai_url, "--model", "gpt-4o", "--root", str(generated),
            "--out", str(out), "--mode", "cumulative", "--dataset", "Synth-Gravel"]
    try:
        assert cli.main(["qa", "estimate", *args, "--json"]) == 0
        captured = capsys.readouterr()
        before = json.loads(captured.out)["total"]
        assert before["jobs"] == 27 and before["plain"] > 0
        assert "at most 6x" in captured.err and "one-letter replies" in captured.err
        assert cli.main(["qa", "run", *args, "--dry-run"]) == 0
        shown = capsys.readouterr().out
        assert '"detail": "low"' in shown and "box<=512x512" in shown and "Question 1:" in shown
        assert not server.requests
        assert cli.main(["qa", "run", *args, "-q"]) == 0
        assert cli.main(["qa", "estimate", *args, "--json"]) == 0
        after = json.loads(capsys.readouterr().out)["total"]
    finally:
        server.stop()
    assert after["jobs"] == 0


def test_other_settings_in_the_same_folder_are_refused(generated, env, capsys):
    server = start(Replies())
    out = env / "out"
    try:
        assert qa_run(server, generated, out, "--dataset", "Synth-Gravel", "--sample", "1") == 0
        capsys.readouterr()
        assert qa_run(server, generated, out, "--dataset", "Synth-Gravel", "--sample", "1", "--shots", "2") == 2
    finally:
        server.stop()
    assert "shots: 1 -> 2" in capsys.readouterr().err
    shutil.rmtree(out)
