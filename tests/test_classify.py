"""Anomaly classification (VELM): ground truth, answer mapping, class files, metrics against
scikit-learn, the grouping, and `mmad classify` + `mmad eval --task classify` end to end."""

import json

import numpy as np
import pytest

from mmad import cli
from mmad.classify.answers import map_answer
from mmad.classify.classes import load_class_file
from mmad.classify.scores import classification_scores, effective_truth, group_accuracy, random_grouping
from mmad.classify.truth import true_classes
from mmad.data import datasets
from mmad.data.synth import synthesize
from mmad.errors import ConfigError, DataError
from tests.hybrid_helpers import decoded, pixels_key, query_index, red_mask, write_detector_run
from tests.wire_server import WireServer

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="needs scikit-learn (pip install -e '.[test]')")


def test_true_classes_from_folder_names():
    assert true_classes("cut_level_3/007.png") == ("cut",)
    assert true_classes('"melt,scratch_level_2"/000.JPG') == ("melt", "scratch")
    assert true_classes("bubble,discolor,scratch_level_1/087.JPG") == ("bubble", "discolor", "scratch")
    assert true_classes("good_level_0/000.png") == ("good",)
    assert true_classes("missing_wire_level_2/004.png") == ("missing_wire",)
    assert true_classes("poke_insulation/000.png") == ("poke_insulation",)  # MVTec-AC folder layout
    with pytest.raises(DataError):
        true_classes("000.png")


CLASSES = ("blotch", "scratch", "missing_wire")


@pytest.mark.parametrize("answer, predicted, match", [
    ("scratch", "scratch", "exact"), ("Scratch.", "scratch", "exact"), ("**BLOTCH**", "blotch", "exact"),
    ("Anomaly class: missing wire", "missing_wire", "exact"), ("`missing-wire`", "missing_wire", "exact"),
    ("2", "scratch", "number"), ("3.", "missing_wire", "number"), ("7", "unknown", "none"),
    ("The image shows a scratch across the surface.", "scratch", "mention"),
    ("Either a blotch or a scratch.", "unknown", "none"), ("scrach", "scratch", "close"),
    ("normal", "good", "exact"), ("a dent", "unknown", "none"), ("", "unknown", "none")])
def test_answer_mapping(answer, predicted, match):
    mapped = map_answer(answer, CLASSES)
    assert (mapped.predicted, mapped.match) == (predicted, match)


def test_class_files_toml_and_velm_json_read_alike(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[cable]\nnormal = "A cable."\nclasses = [{name = "cut", description = "Cut."},'
                    ' {name = "bent_wire", description = "Bent."}]\n')
    velm = tmp_path / "c.json"
    velm.write_text(json.dumps({"cable": {"normal": ["A cable."], "cls": [["cut", "Cut."], ["bent_wire", "Bent."]]}}))
    assert load_class_file(toml).subsets == load_class_file(velm).subsets
    assert load_class_file(toml).for_subset("cable").names == ("cut", "bent_wire")
    bad = tmp_path / "bad.toml"
    bad.write_text('[cable]\nnormal = "x"\nclasses = [{name = "good", description = "y"}]\n')
    with pytest.raises(ConfigError, match="reserved"):
        load_class_file(bad)
    with pytest.raises(ConfigError, match="no class descriptions for 'wire'"):
        load_class_file(toml).for_subset("wire")


def random_fixture(seed, n=300):
    rng = np.random.default_rng(seed)
    classes = ["good", "a", "b", "c", "d"]
    truths, predicted = [], []
    for _ in range(n):
        k = rng.choice([1, 1, 1, 2, 3])
        truths.append(tuple(rng.choice(classes[1:], size=k, replace=False)) if rng.random() > 0.2 else ("good",))
        predicted.append(str(rng.choice(classes + ["unknown"], p=[0.15, 0.25, 0.2, 0.2, 0.1, 0.1])))
    return truths, predicted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed):
    truths, predicted = random_fixture(seed)
    y_true = effective_truth(truths, predicted)
    # the multi-type rule by hand: correct iff the prediction is one of the types
    assert [t == p for t, p in zip(y_true, predicted)] == [p in truth for truth, p in zip(truths, predicted)]
    scores = classification_scores(y_true, predicted, ("a", "b", "c", "d"))
    assert scores.accuracy == pytest.approx(sklearn_metrics.accuracy_score(y_true, predicted), abs=1e-12)
    assert scores.macro_f1 == pytest.approx(sklearn_metrics.f1_score(y_true, predicted, average="macro",
                                                                     zero_division=0), abs=1e-12)
    assert scores.micro_f1 == pytest.approx(sklearn_metrics.f1_score(y_true, predicted, average="micro"), abs=1e-12)
    assert scores.kappa == pytest.approx(sklearn_metrics.cohen_kappa_score(y_true, predicted), abs=1e-12)
    assert np.array_equal(scores.matrix, sklearn_metrics.confusion_matrix(y_true, predicted, labels=list(scores.labels)))
    assert scores.labels[0] == "good" and scores.labels[-1] == "unknown"


def test_grouping():
    for seed in range(5):
        a, b = random_grouping(["x", "y", "z", "w"], seed, "cable")
        assert len(a) == 1 and len(b) == 3 and random_grouping(["x", "y", "z", "w"], seed, "cable") == (a, b)
        assert len(random_grouping(list("abcdef"), seed, "cable")[0]) == 2  # more than 4 classes: 2 in group A
    truths = [("good",), ("good",), ("x",), ("y",), ("x", "z"), ("z",), ("w",)]
    predicted = ["good", "x", "z", "y", "z", "unknown", "x"]
    got = group_accuracy(truths, predicted, {"A": frozenset({"x"}), "B": frozenset({"y", "z", "w"})})
    # by hand: normal 1/2; A: ("x",)->z is B: wrong; ("x","z")->z: B is one of its groups, counted under B;
    # B: ("y",)->y ok, ("x","z")->z ok, ("z",)->unknown wrong, ("w",)->x wrong -> 2/4; A: 0/1
    assert got == {"normal": 0.5, "A": 0.0, "B": 0.5}


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def demo(tmp_path, monkeypatch):
    root = tmp_path / "data"
    synthesize(root, train=4, per_level=3, size=64, textures=("brick",))
    subset = datasets.resolve(root, "synth", "brick")[0]
    paths = datasets.load_subset(subset).paths
    scores = {p: (0.1 + 0.05 * i if p.startswith("good") else 1.0 + i) for i, p in enumerate(paths)}
    scores[paths[-1]] = 0.2  # one anomalous image the detector misses: the gate predicts good
    detector = write_detector_run(tmp_path / "det", subset, scores, calibration=[0.1, 0.35, 0.2])
    truth = {p: true_classes(p) for p in paths}
    index = query_index(subset)

    def answer(received):  # answers in several forms, depending on the image's position in the template
        text = "\n".join(received.texts())
        if "Only return the class name" not in text:
            return "Anomaly Score: 5"
        rel = index[pixels_key(decoded(received.images()[1]))]
        forms = [truth[rel][0].capitalize() + ".", "2", "It is a dent.", "**blotch**"]
        return forms[paths.index(rel) % 4]
    server = WireServer(answer=answer).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path, root, subset, paths, scores, detector, server, truth
    server.stop()


def classify(server, root, *extra):
    return cli.main(["classify", "--provider", "openai", "--model", "m", "--base-url", server.openai_url,
                     "--root", str(root), "--dataset", "synth", "-q", *extra])


def expected_prediction(rel, paths, truth):
    form = paths.index(rel) % 4
    return [truth[rel][0], "scratch", "unknown", "blotch"][form]


def test_classify_conditioned_end_to_end_and_eval_equals_sklearn(demo, capsys):
    tmp, root, subset, paths, scores, detector, server, truth = demo
    assert classify(server, root, "--variant", "conditioned", "--detector-run", str(detector)) == 0
    requests = list(server.requests)
    sent = {p for p, s in scores.items() if s >= 0.35}
    assert len(requests) == len(sent)
    for received in requests:
        images = [decoded(d) for d in received.images()]
        assert len(images) == 3 and received.texts()[1:] == ["Image 1:", "Image 2:", "Image 3:"]
        assert red_mask(images[2]).any() and not red_mask(images[1]).any()
        assert "Choose the anomaly class of the image. Only return the class name." in received.texts()[0]
        assert "1. blotch: " in received.texts()[0] and "2. scratch: " in received.texts()[0]
    folder = tmp / "results-classify" / "m+classify-conditioned+det-3shot"
    rows = (folder / "m+classify-conditioned+det-3shot_synth_brick.csv").read_text().splitlines()
    assert rows[0] == "Path,Severity,True Classes,Predicted Class,Status,Decided By"
    import csv
    table = list(csv.reader(rows[1:]))
    got = {row[0]: (row[2], row[3], row[5]) for row in table}
    for rel in paths:
        expected = expected_prediction(rel, paths, truth) if rel in sent else "good"
        assert got[rel] == (",".join(truth[rel]), expected, "mllm" if rel in sent else "gate")
    records = [json.loads(line) for line in (folder / "m+classify-conditioned+det-3shot_synth_brick.jsonl").open()]
    unknown = [r for r in records if r["predicted"] == "unknown"]
    assert unknown and all(r["raw"] == "It is a dent." and r["match"] == "none" for r in unknown)
    assert {r["path"] for r in records if r["source"] == "gate"} == set(paths) - sent
    info = json.loads((folder / "run.json").read_text())
    assert info["settings"]["task"] == "classify" and info["settings"]["classes"]["names"] == {
        "synth/brick": ["blotch", "scratch"]}
    # eval: the numbers equal scikit-learn's on the rows, with the multi-type rule applied by hand
    capsys.readouterr()
    assert cli.main(["eval", "--task", "classify", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [category] = report["categories"]
    predicted = [got[p][1] for p in paths]
    y_true = [pred if pred in truth[p] else truth[p][0] for p, pred in zip(paths, predicted)]
    assert category["n"] == len(paths) and category["gated"] == len(paths) - len(sent)
    assert category["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, predicted))
    assert category["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(y_true, predicted, average="macro"))
    assert category["kappa"] == pytest.approx(sklearn_metrics.cohen_kappa_score(y_true, predicted))
    labels = category["confusion"]["labels"]
    assert category["confusion"]["matrix"] == sklearn_metrics.confusion_matrix(y_true, predicted, labels=labels).tolist()
    assert report["overall"][0]["accuracy"] == pytest.approx(category["accuracy"])  # one category: its own
    assert report["groups"][0]["seeds"] == 5
    assert cli.main(["eval", "--task", "classify", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "confusion matrix" in captured.out and "negligible anomaly vs critical defect" in captured.out
    assert "predicted 'good' by the detector gate" in captured.err
    groups = tmp / "groups.toml"
    groups.write_text('[brick]\nnegligible = ["blotch"]\ncritical = ["scratch"]\n')
    assert cli.main(["eval", "--task", "classify", str(folder), "--json", "--groups", str(groups)]) == 0
    grouped = json.loads(capsys.readouterr().out)["groups"][0]
    assert grouped["seeds"] == 0 and set(grouped["mean"]) == {"normal", "negligible", "critical"}


def test_classify_raw_without_detector_asks_known_anomalies_only(demo, capsys):
    tmp, root, subset, paths, scores, detector, server, truth = demo
    assert classify(server, root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "3 normal images left out" in out and "9 jobs in 1 run(s)" in out and not server.requests
    assert classify(server, root, "--estimate", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"]["jobs"] == 9  # stdout is only the JSON (the plan report: stderr)
    assert classify(server, root) == 0
    requests = list(server.requests)
    assert len(requests) == 9 and all(len(r.images()) == 2 for r in requests)
    assert classify(server, root, "--variant", "conditioned") == 2
    assert "--detector-run" in capsys.readouterr().err


def test_folder_layout_mvtec_ac(tmp_path, monkeypatch):
    """`<root>/<dataset>/<category>/test/<type>/` with train/good references; classes from --classes."""
    from tests.conftest import write_image
    base = tmp_path / "data" / "mvtec_ac" / "cable"
    for i in range(2):
        write_image(base / "train" / "good" / f"{i:03d}.png", seed=i)
    for kind in ("good", "cut", "bent_wire"):
        for i in range(2):
            write_image(base / "test" / kind / f"{i:03d}.png", seed=100 * len(kind) + i)
    classes = tmp_path / "c.json"
    classes.write_text(json.dumps({"cable": {"normal": ["A cable."], "cls": [["cut", "Cut."], ["bent_wire", "Bent."]]}}))
    server = WireServer(answer=lambda received: "cut").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    try:
        code = cli.main(["classify", "--provider", "openai", "--model", "m", "--base-url", server.openai_url,
                         "--root", str(tmp_path / "data"), "--dataset", "mvtec_ac", "--classes", str(classes),
                         "--out", str(tmp_path / "out"), "-q"])
    finally:
        server.stop()
    assert code == 0
    rows = (tmp_path / "out" / "m+classify-raw_mvtec_ac_cable.csv").read_text().splitlines()
    assert sorted(rows[1:]) == ["bent_wire/000.png,,bent_wire,cut,ok,mllm", "bent_wire/001.png,,bent_wire,cut,ok,mllm",
                                "cut/000.png,,cut,cut,ok,mllm", "cut/001.png,,cut,cut,ok,mllm"]
