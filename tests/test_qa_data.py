"""MMAD-QA data: the generated set, validation as one line naming the file and entry, fetching offline."""

import json
import shutil
import socket

import pytest

from mmad import cli
from mmad.qa.data import load_benchmark
from tests.qa_support import small_set


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return small_set(tmp_path_factory.mktemp("qa-set"))


@pytest.fixture
def root(generated, tmp_path):
    copy = tmp_path / "qa"
    shutil.copytree(generated, copy)
    return copy


def test_generated_set_has_every_subtask_and_known_answers(generated):
    bench = load_benchmark(generated, shots=3, templates="similar", knowledge=True)
    assert len(bench.entries) == 15 and bench.questions == 81
    assert bench.datasets == ["Synth-Textures", "Synth-Gravel"]
    subtasks = {q.subtask for e in bench.entries for q in e.questions}
    assert subtasks == {"Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
                        "Defect Analysis", "Object Classification", "Object Structure", "Object Details"}
    for entry in bench.entries:
        detection = entry.questions[0]
        said = detection.option_map[detection.answer]
        assert said == ("No" if "good" in entry.image else "Yes")  # the benchmark's normal rule
        assert all(t.split("/")[:2] == entry.image.split("/")[:2] for t in entry.random_templates)
        assert "/train/good/" in entry.similar_templates[0]
    assert len({q.answer for e in bench.entries for q in e.questions}) >= 4  # letters vary


def edit(root, change):
    path = root / "mmad.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def first_defect(data):
    return next(key for key in data if "/good/" not in key)


def drop_options(data):
    data[first_defect(data)]["conversation"][1]["Options"] = {}


def bad_answer(data):
    data[first_defect(data)]["conversation"][2]["Answer"] = "F"


def list_answer(data):  # unhashable: once a TypeError traceback from `answer not in options`
    data[first_defect(data)]["conversation"][2]["Answer"] = ["A"]


def no_question_text(data):
    del data[first_defect(data)]["conversation"][0]["Question"]


def bad_option_key(data):
    question = data[first_defect(data)]["conversation"][1]
    question["Options"]["Z"] = "zebra"


@pytest.mark.parametrize("change, fragment", [
    (drop_options, "question 2 has no 'Options'"),
    (bad_answer, "answer 'F' is not among its options"),
    (list_answer, "answer ['A'] is not among its options"),
    (no_question_text, "question 1 has no 'Question' text"),
    (bad_option_key, "option key 'Z' is not one of the letters A-E"),
])
def test_malformed_questions_are_one_line_naming_file_and_entry(root, capsys, change, fragment):
    edit(root, change)
    assert cli.main(["qa", "check", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err
    assert str(root / "mmad.json") in err and fragment in err and "entry 'Synth-Textures/brick/test/" in err


def test_malformed_json_names_line_and_column(root, capsys):
    (root / "mmad.json").write_text('{"a/b/c.png": {"conversation": [}')
    assert cli.main(["qa", "check", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "not valid JSON (line 1, column" in err and str(root / "mmad.json") in err


def test_missing_images_and_templates(root, capsys):
    (root / "Synth-Gravel/gravel/test/good/000.png").unlink()
    assert cli.main(["qa", "check", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "entry 'Synth-Gravel/gravel/test/good/000.png': image not found" in err
    shutil.rmtree(root / "Synth-Gravel")
    assert cli.main(["qa", "check", "--root", str(root), "--shots", "4"]) == 2  # 3 templates listed
    assert "has 3 random_templates, --shots 4 needs 4" in capsys.readouterr().err


def test_missing_domain_knowledge_category(root, capsys):
    edit_path = root / "domain_knowledge.json"
    knowledge = json.loads(edit_path.read_text())
    del knowledge["Synth-Gravel"]["gravel"]
    edit_path.write_text(json.dumps(knowledge))
    assert cli.main(["qa", "check", "--root", str(root)]) == 0  # not needed without --domain-knowledge
    assert cli.main(["qa", "check", "--root", str(root), "--domain-knowledge"]) == 2
    assert "no domain knowledge for Synth-Gravel/gravel" in capsys.readouterr().err


def test_ds_mvtec_images_read_the_real_files_mvtec_knowledge(root, capsys):
    """The real domain_knowledge.json keys DS-MVTec images under `MVTec`, as MMAD's scripts
    look them up (`dataset.replace("DS-MVTec", "MVTec")`); mmad refused that file before."""
    annotation = json.loads((root / "mmad.json").read_text())
    moved = {}
    for image, entry in annotation.items():
        new = image.replace("Synth-Textures/", "DS-MVTec/")
        for key in ("random_templates", "similar_templates"):
            entry[key] = [p.replace("Synth-Textures/", "DS-MVTec/") for p in entry[key]]
        if entry.get("mask_path"):
            entry["mask_path"] = entry["mask_path"].replace("Synth-Textures/", "DS-MVTec/")
        moved[new] = entry
    (root / "Synth-Textures").rename(root / "DS-MVTec")
    (root / "mmad.json").write_text(json.dumps(moved))
    knowledge = json.loads((root / "domain_knowledge.json").read_text())
    knowledge["MVTec"] = knowledge.pop("Synth-Textures")
    (root / "domain_knowledge.json").write_text(json.dumps(knowledge))
    bench = load_benchmark(root, knowledge=True)
    entry = next(e for e in bench.entries if e.dataset == "DS-MVTec" and e.category == "brick")
    assert bench.knowledge_text(entry) == "\n".join(knowledge["MVTec"]["brick"].values())
    del knowledge["MVTec"]["grass"]
    (root / "domain_knowledge.json").write_text(json.dumps(knowledge))
    assert cli.main(["qa", "check", "--root", str(root), "--domain-knowledge"]) == 2
    assert "no domain knowledge for MVTec (for DS-MVTec)/grass" in capsys.readouterr().err


def test_missing_root_and_annotation(tmp_path, capsys):
    assert cli.main(["qa", "check", "--root", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["qa", "check", "--root", str(tmp_path)]) == 2
    assert "mmad.json: not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["data", "fetch", "--source", "mmad-qa"], ["qa", "fetch"]])
def test_fetch_offline_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch, argv):
    pytest.importorskip("huggingface_hub", reason="needs the fetch extra: pip install 'mmad[fetch]'")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert cli.main([*argv, "--root", str(tmp_path / "qa")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach the Hugging Face hub" in err
    assert not (tmp_path / "qa").exists()


def test_fetch_writes_the_hub_images_at_their_paths(generated, tmp_path, capsys, monkeypatch):
    """The hub is faked by a local snapshot folder: images land under the root at their repository
    paths, other files are left out, a second fetch skips what is there."""
    hub = pytest.importorskip("huggingface_hub", reason="needs the fetch extra: pip install 'mmad[fetch]'")
    import mmad.data.fetch
    snapshot = tmp_path / "snapshot"
    shutil.copytree(generated / "Synth-Gravel", snapshot / "Synth-Gravel")
    (snapshot / "README.md").write_text("not an image")
    asked_for = {}

    def fake_download(**kwargs):
        asked_for.update(kwargs)
        return str(snapshot)
    monkeypatch.setattr(mmad.data.fetch, "check_hub_reachable", lambda: None)
    monkeypatch.setattr(hub, "snapshot_download", fake_download)
    root = tmp_path / "qa"
    assert cli.main(["qa", "fetch", "--root", str(root)]) == 0
    images = sorted(p.relative_to(snapshot) for p in snapshot.rglob("*.png"))
    assert sorted(p.relative_to(root) for p in root.rglob("*.png")) == images and not (root / "README.md").exists()
    assert asked_for["repo_id"] == "jiang-cc/MMAD" and asked_for["repo_type"] == "dataset"
    out = capsys.readouterr().out
    assert f"{len(images)} images written, 0 already present" in out and "mmad.json" in out
    assert cli.main(["data", "fetch", "--source", "mmad-qa", "--root", str(root)]) == 0
    assert f"0 images written, {len(images)} already present" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, words", [("--train", "2", "at least 3"), ("--seed", "-1", "0 or more"),
                                               ("--normal", "100000", "at most 1000")])
def test_qa_synth_refuses_counts_it_cannot_draw_from_in_one_line(tmp_path, capsys, flag, value, words):
    with pytest.raises(SystemExit) as stop:
        cli.main(["qa", "synth", "--root", str(tmp_path / "qa"), flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "qa").exists()
