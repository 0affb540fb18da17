"""MMAD-QA without a server: answer parsing, the metrics against hand computations, bootstrap
and McNemar calibration, the prompt assets and the 512x512 fitting rule."""

import math
from difflib import get_close_matches

import numpy as np
import pytest

from mmad.errors import ConfigError
from mmad.qa.compare import compare_rows, mcnemar_exact
from mmad.qa.jobs import box_height
from mmad.qa.metrics import evaluate_run
from mmad.qa.parsing import MIN_SIMILARITY, parse_choice
from mmad.qa.prompt import load_qa_prompt
from mmad.qa.results import QARow

OPTIONS = {"A": "spot", "B": "scratch", "C": "crack", "D": "hole"}


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("reply, letter, how", [
    ("B", "B", "letter"),
    ("The answer is C.", "C", "letter"),
    ("A. spot\nB. scratch\nAnswer: D", "D", "letter"),  # the last standalone letter
    ("D is wrong, so B", "B", "letter"),
    ("E", None, None),  # a letter that is not an option is no answer; "e" is near no option text
    ("scratches", "B", "option text"),  # no letter: the closest option text
    ("I see a scratch", "B", "option text"),
    ("it looks fine to me overall", None, None),  # garbage stays a failure
    ("", None, None),
])
def test_letters_prose_and_closest_option(reply, letter, how):
    choice = parse_choice(reply, OPTIONS)
    assert (choice.letter, choice.how, choice.refused) == (letter, how, False)
    if letter is None:
        assert choice.error


def test_yes_no_prose_and_case():
    yes_no = {"A": "Yes", "B": "No"}
    assert parse_choice("No.", yes_no).letter == "B"  # 'No' has no standalone A-E: the option text
    assert parse_choice("yes", yes_no).letter == "A"
    assert parse_choice("b", yes_no).letter is None  # lower case is not a letter answer; 'b' is near neither


@pytest.mark.parametrize("reply", ["Sorry, I cannot help.", "I cannot assist with that", "Please look again: B",
                                   "Not today."])
def test_refusal_words_are_refusals_even_with_a_letter(reply):
    choice = parse_choice(reply, OPTIONS)
    assert choice.refused and choice.letter is None


def test_closest_option_agrees_with_difflib_and_needs_the_minimum():
    rng = np.random.default_rng(3)
    words = ["spot", "scratch", "crack", "hole", "scrach", "hol", "sopt", "cracked", "spots", "holes", "xq"]
    for _ in range(200):
        reply = " ".join(rng.choice(words, size=rng.integers(1, 3)))
        choice = parse_choice(reply, OPTIONS)
        near = get_close_matches(reply, list(OPTIONS.values()), n=1, cutoff=MIN_SIMILARITY)
        if choice.letter is not None:
            assert near and OPTIONS[choice.letter] == near[0]
        elif choice.similarity is not None and choice.similarity < MIN_SIMILARITY:
            assert not near


def test_a_tie_between_options_is_no_answer():
    choice = parse_choice("aba", {"A": "ab", "B": "ba"})  # ratio 0.8 to both
    assert choice.letter is None and "equally close" in choice.error


# --------------------------------------------------------------------------- metrics by hand

def row(image, subtask, correct, predicted, status="ok", note=""):
    return QARow(f"{image}#{subtask}{predicted}{status}", image, subtask, correct, predicted if status == "ok" else None,
                 status, note)


def hand_rows():
    return [
        # D1: normal images 0, 1; anomalous 2, 3, 4
        row("D1/x/test/good/0.png", "Anomaly Detection", "B", "B"),
        row("D1/x/test/good/0.png", "Object Classification", "A", "A"),
        row("D1/x/test/good/1.png", "Anomaly Detection", "B", "A"),
        row("D1/x/test/good/1.png", "Object Structure", "C", "C"),
        row("D1/x/test/bad/2.png", "Anomaly Detection", "A", "A"),
        row("D1/x/test/bad/2.png", "Defect Classification", "A", "B"),
        row("D1/x/test/bad/2.png", "Object Classification", "D", "D"),
        row("D1/x/test/bad/3.png", "Anomaly Detection", "A", "A"),
        row("D1/x/test/bad/3.png", "Defect Classification", "C", "C"),
        row("D1/x/test/bad/3.png", "Object Details", "B", "A"),
        row("D1/x/test/bad/3.png", "Defect Localization", "B", None, "parse_failed"),
        row("D1/x/test/bad/4.png", "Anomaly Detection", "A", "B"),
        row("D1/x/test/bad/4.png", "Defect Classification", "D", "D"),
        # D2: normal a; anomalous b, c
        row("D2/y/good/a.png", "Anomaly Detection", "B", "B"),
        row("D2/y/bad/b.png", "Anomaly Detection", "A", "A"),
        row("D2/y/bad/b.png", "Defect Localization", "C", "C"),
        row("D2/y/bad/b.png", "Defect Localization", "D", "A"),
        row("D2/y/bad/c.png", "Anomaly Detection", "A", "B"),
        row("D2/y/bad/c.png", "Defect Classification", "A", None, "refused"),
        row("D2/y/bad/c.png", "Defect Description", "A", None, "error", "not asked: an earlier question ..."),
        row("D2/y/bad/c.png", "Object Classification", "A", None, "pending"),
    ]


def test_table_matches_a_hand_computation():
    d1, d2, mean = evaluate_run("r", hand_rows())
    # D1: detection normal 1/2, anomalous 2/3 -> (0.5 + 0.6667) / 2; DC 2/3; OC 2/2; Object Structure +
    # Object Details = Object Analysis 1/2; DL only failed -> undefined, left out of the average
    assert d1.cells["Anomaly Detection"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert d1.cells["Defect Classification"] == pytest.approx(2 / 3)
    assert d1.cells["Object Classification"] == 1.0 and d1.cells["Object Analysis"] == 0.5
    assert math.isnan(d1.cells["Defect Localization"])
    assert d1.cells["Average"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 2 / 3 + 1.0 + 0.5) / 4)
    assert (d1.cells["Overkill"], d1.cells["Miss"]) == (pytest.approx(0.5), pytest.approx(1 / 3))
    assert dict(d1.failed) == {"parse_failed": 1} and d1.images == 5 and d1.questions == 13
    # D2: detection 1/1 and 1/2 -> 0.75; DL 1/2; the refused, not-asked and pending questions are out
    assert d2.cells["Anomaly Detection"] == pytest.approx(0.75) and d2.cells["Defect Localization"] == 0.5
    assert math.isnan(d2.cells["Defect Classification"]) and math.isnan(d2.cells["Object Classification"])
    assert d2.cells["Average"] == pytest.approx(0.625)
    assert dict(d2.failed) == {"refused": 1, "not asked": 1} and d2.pending == 1
    # the mean row: per column over the datasets that have it; Average = mean of the datasets' averages
    assert mean.dataset == "Average"
    assert mean.cells["Anomaly Detection"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0.75) / 2)
    assert mean.cells["Defect Classification"] == pytest.approx(2 / 3)
    assert mean.cells["Average"] == pytest.approx((d1.cells["Average"] + 0.625) / 2)
    assert mean.cells["Overkill"] == pytest.approx(0.25) and mean.cells["Miss"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert sum(mean.failed.values()) == 3 and mean.pending == 1


def test_bootstrap_keeps_strata_and_is_seeded():
    rows = hand_rows()
    first = evaluate_run("r", rows, bootstrap=300, seed=5)
    again = evaluate_run("r", rows, bootstrap=300, seed=5)
    assert repr(first[0].ci) == repr(again[0].ci)  # NaN cells included
    low, high = first[0].ci["Average"]
    assert low <= first[0].cells["Average"] <= high
    # D2 has one normal image: every resample keeps it, so its normal accuracy never varies
    assert first[1].ci["Overkill"] == (0.0, 0.0)


def test_bootstrap_interval_covers_clustered_accuracy():
    """Questions of one image share its difficulty; resampling images keeps the 95% interval honest."""
    rng = np.random.default_rng(11)
    covered, sims = 0, 150
    for sim in range(sims):
        rows = []
        for i in range(40):
            difficulty = rng.beta(2, 1)  # mean 2/3: the true accuracy
            normal = i < 20
            image = f"S/c/{'good' if normal else 'bad'}/{i}.png"
            for q in range(3):
                right = rng.random() < difficulty
                rows.append(QARow(f"{image}#{q}", image, "Defect Classification", "A", "A" if right else "B", "ok"))
        result = evaluate_run("r", rows, bootstrap=300, seed=sim)[0]
        low, high = result.ci["Defect Classification"]
        covered += low <= 2 / 3 <= high
    assert 0.88 <= covered / sims <= 0.99, covered / sims


# --------------------------------------------------------------------------- paired comparison

def test_mcnemar_exact_matches_the_binomial_sum():
    for b, c in [(0, 0), (3, 0), (10, 4), (7, 7), (1, 12), (30, 18)]:
        n, k = b + c, min(b, c)
        expected = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
        assert mcnemar_exact(b, c) == pytest.approx(expected)


def synthetic_runs(rng, n_images=30, p_base=0.7, p_other=0.7):
    base, other = [], []
    for i in range(n_images):
        image = f"D/c/{'good' if i % 3 == 0 else 'bad'}/{i}.png"
        for q, subtask in enumerate(("Anomaly Detection", "Defect Classification", "Object Classification")):
            qid = f"{image}#{q}"
            for rows, p in ((base, p_base), (other, p_other)):
                right = rng.random() < p
                rows.append(QARow(qid, image, subtask, "A", "A" if right else "B", "ok"))
    return base, other


def test_paired_comparison_counts_against_a_slow_loop():
    rng = np.random.default_rng(2)
    base, other = synthetic_runs(rng, p_other=0.85)
    other[0] = QARow(other[0].question_id, other[0].image, other[0].subtask, "A", None, "parse_failed")
    result = compare_rows(base, other, bootstrap=200, seed=1)
    paired = [(b, o) for b, o in zip(base, other) if o.answered]
    assert result.paired == len(paired) and result.failed == 1
    everything = next(r for r in result.rows if r.label == "all questions")
    assert everything.base == pytest.approx(np.mean([b.predicted == "A" for b, _ in paired]))
    assert everything.other == pytest.approx(np.mean([o.predicted == "A" for _, o in paired]))
    b = sum(1 for x, y in paired if x.predicted == "A" and y.predicted != "A")
    c = sum(1 for x, y in paired if x.predicted != "A" and y.predicted == "A")
    assert (everything.base_only, everything.other_only) == (b, c)
    assert everything.p_value == pytest.approx(mcnemar_exact(b, c))
    low, high = everything.ci
    assert low <= everything.diff <= high


def test_null_pairs_are_rejected_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(7)
    rejected = covered = 0
    sims = 120
    for sim in range(sims):
        base, other = synthetic_runs(rng, n_images=40)
        result = compare_rows(base, other, bootstrap=200, seed=sim)
        everything = next(r for r in result.rows if r.label == "all questions")
        rejected += everything.p_value < 0.05
        covered += everything.ci[0] <= 0 <= everything.ci[1]
    assert rejected / sims <= 0.08, rejected / sims  # the exact test is conservative
    assert covered / sims >= 0.88, covered / sims


# --------------------------------------------------------------------------- prompt and images

def test_packaged_prompt_loads_and_renders(tmp_path):
    prompt = load_qa_prompt()
    assert prompt.system.endswith("Answer with the option's letter from the given choices directly!")
    assert "The first 2 image is the normal sample" in prompt.opening(2)
    assert "normal sample" not in prompt.opening(0)
    bad = tmp_path / "bad.toml"
    bad.write_text((prompt.source.read_text()).replace("$k image", "$shots image"))
    with pytest.raises(ConfigError, match="unknown variable"):
        load_qa_prompt(str(bad))


@pytest.mark.parametrize("size, expected", [((640, 400), (512, 320)), ((300, 900), (170, 512)),
                                            ((256, 256), (256, 256)), ((1000, 700), (511, 358)),
                                            ((2000, 2000), (512, 512))])
def test_images_fit_a_512_box_with_aspect_kept(size, expected):
    from mmad.data.images import resized_size
    width, height = size
    fitted = resized_size(width, height, box_height(width, height))
    assert fitted == expected and max(fitted) <= 512
    assert abs(fitted[0] / fitted[1] - width / height) < 2 / min(fitted)  # aspect kept to a pixel


# --------------------------------------------------------------------------- result files and the CLI

def write_run(folder, name, rows):
    import json as _json

    from mmad.qa.results import write_qa_csv
    from mmad.results.runinfo import make_run_info
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(_json.dumps(make_run_info(name, "mllm", {"task": "qa"})))
    write_qa_csv(folder / f"{name}_D.csv", rows)


def test_qa_compare_cli_on_two_run_folders(tmp_path, capsys):
    import json as _json

    from mmad import cli
    rng = np.random.default_rng(4)
    base, other = synthetic_runs(rng, p_base=0.5, p_other=0.9)
    write_run(tmp_path / "a", "run-a", base)
    write_run(tmp_path / "b", "run-b", other)
    assert cli.main(["qa", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", "--bootstrap", "200"]) == 0
    report = _json.loads(capsys.readouterr().out)
    assert (report["base"], report["other"], report["paired"]) == ("run-a", "run-b", 90)
    everything = next(r for r in report["rows"] if r["label"] == "all questions")
    assert everything["diff"] == pytest.approx(everything["other"] - everything["base"], abs=1e-6)
    assert everything["diff"] > 0 and everything["p_mcnemar"] < 0.01 and everything["ci"][0] > 0
    assert [r["label"] for r in report["rows"]][-1] == "benchmark average"
    # `mmad compare` knows QA runs (run.json task "qa") and pairs them by question too
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", "--bootstrap", "200"]) == 0
    assert _json.loads(capsys.readouterr().out)["paired"] == 90


def test_reference_answers_json_is_read_with_its_failures(tmp_path, capsys):
    import json as _json

    from mmad import cli
    answers = [{"image": "VisA/pcb1/test/good/0.png", "question_type": "Anomaly Detection", "correct_answer": "B",
                "gpt_answer": "B"},
               {"image": "VisA/pcb1/test/bad/1.png", "question_type": "Anomaly Detection", "correct_answer": "A",
                "gpt_answer": "A"},
               {"image": "VisA/pcb1/test/bad/1.png", "question_type": "Defect Classification", "correct_answer": "C",
                "gpt_answer": "The defect is a bent lead"}]
    path = tmp_path / "answers_1_shot_gpt-4o.json"
    path.write_text(_json.dumps(answers))
    assert cli.main(["eval", "--task", "qa", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    visa = _json.loads(captured.out)["runs"]["answers_1_shot_gpt-4o"][0]
    assert visa["subtasks"]["Anomaly Detection"]["accuracy"] == 1.0 and visa["failed"] == {"parse_failed": 1}
    assert "1 failed answer(s)" in captured.err


def test_anthropic_has_no_image_detail(tmp_path, capsys):
    from mmad import cli
    assert cli.main(["qa", "estimate", "--provider", "anthropic", "--detail", "low", "--root", str(tmp_path)]) == 2
    assert "--detail is an OpenAI option" in capsys.readouterr().err
