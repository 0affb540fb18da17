import json
import math
import shutil

import numpy as np
import pytest

from mmad import cli
from mmad.analysis.evaluate import dataset_means, evaluate_paths, ranking_agreement
from mmad.data.templates import write_result_csv
from mmad.errors import DataError
from mmad.results.files import JsonlLog, identify, read_result_file
from tests.conftest import write_csv


def reference_result(folder, model, dataset, subset, header, rows):
    name = f"{model}_{dataset}.csv" if dataset == subset else f"{model}_{dataset}_{subset}.csv"
    return write_csv(folder / model / name, header, rows)


def test_identify_names():
    assert identify("gpt4o_mvtec_metal_nut") == ("mvtec", "metal_nut")
    assert identify("patchcore_diabetic-retinopathy") == ("diabetic-retinopathy", "diabetic-retinopathy")
    assert identify("x_visa_pcb1") == ("visa", "pcb1")
    assert identify("x_multidog_golden_retriever") == ("multidog", "golden_retriever")
    assert identify("something_else") is None


def test_reference_quirks_score_and_area_columns(tmp_path):
    pc = reference_result(tmp_path, "patchcore", "mvtec", "bottle", ["Path", "Severity", "Score"],
                          [["a", "0.0", "0.1"], ["b", "1.0", "0.7"]])
    dog = reference_result(tmp_path, "gpt4o", "multidog", "teddy", ["Path", "Area", "Anomaly Score"],
                           [["a", "0", "5"], ["b", "3", "80"]])
    a, b = read_result_file(pc), read_result_file(dog)
    assert a.scores.tolist() == [0.1, 0.7] and (a.dataset, a.subset) == ("mvtec", "bottle")
    assert b.severity.tolist() == [0, 3] and b.dataset == "multidog"


def test_failed_rows_are_dropped_and_counted(tmp_path):
    path = reference_result(tmp_path, "m", "covid19", "covid19", ["Path", "Severity", "Anomaly Score"],
                            [["a", "0", "0"], ["b", "0.5", ""], ["c", "1.5", "40"], ["d", "0", "10"], ["e", "6", "90"]])
    record = evaluate_paths([path])[0]
    assert record.n == 4 and record.dropped == 1
    assert record.auroc_by_level.keys() == {2, 6}  # 1.5 rounds up to 2


def test_non_numeric_score_is_an_error(tmp_path):
    path = reference_result(tmp_path, "m", "mvtec", "grid", ["Path", "Severity", "Anomaly Score"],
                            [["a", "0", "0"], ["b", "1", "high"]])
    with pytest.raises(DataError, match=r"non-numeric score at line\(s\) 3"):
        read_result_file(path)


def test_dataset_means_are_over_subsets(tmp_path):
    for subset, scores in (("bottle", [0, 10, 20, 30]), ("cable", [30, 20, 10, 0])):
        reference_result(tmp_path, "m", "mvtec", subset, ["Path", "Severity", "Anomaly Score"],
                         [[str(i), str(i), str(s)] for i, s in enumerate(scores)])
    records = evaluate_paths([tmp_path])
    mean = dataset_means(records)[0]
    assert mean.subsets == 2 and mean.c_index == pytest.approx(0.5) and mean.auroc == pytest.approx(0.5)


def test_ranking_agreement_by_name():
    names, rho = ranking_agreement({"a": {"auroc": 0.9, "c": 0.8}, "b": {"auroc": 0.8, "c": 0.7},
                                    "c": {"auroc": 0.7, "c": 0.9}})
    assert names == ["auroc", "c"] and rho.shape == (2, 2)


def test_write_result_csv_round_trips_with_commas_and_failures(tmp_path):
    path = tmp_path / "out" / "m_visa_pcb1.csv"
    write_result_csv(path, [("melt,scratch_level_2/080.JPG", 2.0, 55.0), ("good_level_0/1.JPG", 0.0, None)])
    table = read_result_file(path)
    assert table.paths[0] == "melt,scratch_level_2/080.JPG"
    assert table.scores[0] == 55 and math.isnan(table.scores[1])
    assert not list(path.parent.glob(".*tmp"))


def test_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonlLog(path)
    log.append({"a": 1})
    log.close()
    with open(path, "a") as handle:
        handle.write('{"a": 2, "tor')
    log = JsonlLog(path)
    log.append({"a": 3})
    log.close()
    assert [r["a"] for r in JsonlLog.read(path)] == [1, 3]


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_cli_json_records(tmp_path, capsys):
    reference_result(tmp_path, "m", "mvtec", "bottle", ["Path", "Severity", "Anomaly Score"],
                     [["a", "0", "0"], ["b", "1", "20"], ["c", "2", "60"], ["d", "3", ""], ["e", "3", "90"]])
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--json")
    assert code == 0
    [record] = json.loads(out)
    assert set(record) >= {"dataset", "subset", "n", "dropped", "auroc", "auroc_by_level", "c_index", "kendall_tau_b"}
    assert record["dataset"] == "mvtec" and record["n"] == 4 and record["dropped"] == 1
    assert record["auroc_by_level"] == {"1": 1.0, "2": 1.0, "3": 1.0}


def test_eval_cli_markdown_csv_and_table(tmp_path, capsys):
    reference_result(tmp_path, "m", "mvtec", "bottle", ["Path", "Severity", "Anomaly Score"],
                     [["a", "0", "0"], ["b", "1", "20"], ["c", "2", "60"]])
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--markdown")
    assert code == 0 and "| m | mvtec | bottle | 3 | 0 | 100.00 | 1.000 | 100.00 |" in out
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--csv")
    lines = out.splitlines()
    assert lines[0].startswith("run,dataset,subset,n,dropped,auroc,kendall_tau_b,c_index")
    assert lines[1].startswith("m,mvtec,bottle,3,0,1.0,1.0,1.0")  # numbers for scripts, not "100.00"
    code, out, _ = run_cli(capsys, "eval", str(tmp_path))
    assert "bottle" in out and "100.00" in out


def test_eval_cli_bootstrap(tmp_path, capsys):
    rows = [[str(i), str(i % 4), str((i % 4) * 10 + i % 7)] for i in range(40)]
    reference_result(tmp_path, "m", "mvtec", "bottle", ["Path", "Severity", "Anomaly Score"], rows)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--json", "--bootstrap", "100")
    ci = json.loads(out)[0]["ci"]
    assert ci["c_index"][0] <= ci["c_index"][1]


@pytest.mark.parametrize("content,fragment", [
    ("Path,Severity,Anomaly Score\na,0,zero\n", "non-numeric score at line(s) 2"),
    ("Path,Anomaly Score\na,3\n", "no severity column"),
    ("", "empty file"),
])
def test_eval_cli_bad_input_is_one_line(tmp_path, capsys, content, fragment):
    path = tmp_path / "m_mvtec_bottle.csv"
    path.write_text(content)
    code, out, err = run_cli(capsys, "eval", str(path))
    assert code != 0
    assert fragment in err and "Traceback" not in err
    assert err.strip().count("\n") == 0


def test_eval_reads_real_template_shaped_result(shared_templates, tmp_path, capsys):
    """A result built from a published template (quoted commas) evaluates end to end."""
    import csv
    rows = list(csv.reader(open(shared_templates / "visa_pcb1_template.csv")))
    rng = np.random.default_rng(0)
    out_rows = [[p, s, str(int(float(s) * 25 + rng.integers(0, 30)))] for p, s in rows[1:]]
    reference_result(tmp_path, "gpt", "visa", "pcb1", ["Path", "Severity", "Anomaly Score"], out_rows)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--json")
    record = json.loads(out)[0]
    assert code == 0 and record["n"] == 200 and record["subset"] == "pcb1"


def test_prompt_variants_side_by_side(tmp_path, capsys):
    rows_a = [["a", "0", "0"], ["b", "1", "20"], ["c", "2", "60"]]
    rows_b = [["a", "0", "50"], ["b", "1", "20"], ["c", "2", "60"]]
    reference_result(tmp_path, "gpt-4o-paper", "mvtec", "bottle", ["Path", "Severity", "Anomaly Score"], rows_a)
    reference_result(tmp_path, "gpt-4o-script", "mvtec", "bottle", ["Path", "Severity", "Anomaly Score"], rows_b)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--json")
    records = {r["run"]: r for r in json.loads(out)}
    assert records.keys() == {"gpt-4o-paper", "gpt-4o-script"}
    assert records["gpt-4o-paper"]["c_index"] == 1.0 and records["gpt-4o-script"]["c_index"] < 1.0
    means = dataset_means(evaluate_paths([tmp_path]))
    assert {(m.run, m.dataset) for m in means} == {("gpt-4o-paper", "mvtec"), ("gpt-4o-script", "mvtec")}


def test_eval_agreement_between_metric_rankings(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for run, noise in (("a", 1), ("b", 10), ("c", 40), ("d", 80)):
        rows = [[str(i), str(i % 4), str(round((i % 4) * 25 + rng.normal(0, noise), 2))] for i in range(60)]
        reference_result(tmp_path, run, "mvtec", "bottle", ["Path", "Severity", "Anomaly Score"], rows)
    code, out, _ = run_cli(capsys, "eval", str(tmp_path), "--agreement")
    assert code == 0 and "Spearman correlation of the rankings of 4 runs" in out
    assert "1.000" in out
    reference_dir = tmp_path / "few"
    reference_result(reference_dir, "a", "mvtec", "bottle", ["Path", "Severity", "Anomaly Score"], [["x", "0", "1"]])
    code, out, err = run_cli(capsys, "eval", str(reference_dir), "--agreement")
    assert code == 2 and "needs at least 3 runs" in err and out == ""  # refused before any table


def test_folders_with_runs_of_another_task_evaluate_the_score_runs_and_say_what_was_left_out(tmp_path, capsys):
    from tests.run_fixtures import write_run
    results = tmp_path / "results"
    write_run(results / "m", "m", {("mvtec", "bottle"): ([0, 1, 2], [1, 5, 9])}, kind="mllm", settings={})
    qa = results / "m-qa"
    qa.mkdir()
    (qa / "run.json").write_text(json.dumps({"mmad_run": 1, "run": "m-qa", "kind": "mllm",
                                             "settings": {"task": "qa"}}))
    write_csv(qa / "m-qa_Synth-Gravel.csv", ["image", "question", "answer"], [["a.png", "1", "A"]])
    assert cli.main(["eval", str(results), "--json"]) == 0
    captured = capsys.readouterr()
    assert [r["run"] for r in json.loads(captured.out)] == ["m"]
    assert "left out runs of another task" in captured.err and "mmad eval --task qa" in captured.err
    assert cli.main(["eval", str(qa / "m-qa_Synth-Gravel.csv")]) == 2  # named directly: which --task reads it
    assert "an MMAD-QA run" in capsys.readouterr().err
    assert cli.main(["eval", str(qa)]) == 2  # a folder of QA runs only: the error says which --task reads it
    assert "mmad eval --task qa" in capsys.readouterr().err
    write_csv(qa / "m-qa_Synth-Gravel.csv", ["question_id", "image", "subtask", "correct", "predicted", "status",
                                             "note"], [["q1", "Synth-Gravel/a/good/0.png", "Anomaly Detection", "A",
                                                        "A", "ok", ""]])
    assert cli.main(["eval", "--task", "qa", str(results), "--json"]) == 0  # and the other way round
    assert "left out 1 folder(s) of other result files" in capsys.readouterr().err
    assert cli.main(["report", str(results / "m"), str(qa), "--json", "--root", str(tmp_path / "none")]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_runs"] == [str(qa)]


def test_a_run_and_its_export_are_two_runs_not_one_counted_twice(tmp_path, capsys):
    from tests.run_fixtures import write_run
    results = tmp_path / "results"
    write_run(results / "m", "m", {("mvtec", "bottle"): ([0, 1, 2], [1, 5, 9]),
                                   ("mvtec", "cable"): ([0, 1, 2], [9, 5, 1])}, kind="mllm", settings={})
    assert cli.main(["export", "--reference-format", str(results / "m")]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(results), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["run"] for r in records) == ["m (m)", "m (m)", "m (m-reference)", "m (m-reference)"]
    assert cli.main(["eval", str(results / "m"), str(results / "m" / "m_mvtec_bottle.csv"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2  # a file named twice counts once
    shutil.copytree(results / "m", tmp_path / "copy" / "m")  # a copy whose folder has the same name
    assert cli.main(["eval", str(results / "m"), str(tmp_path / "copy" / "m"), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["run"] for r in records) == ["m (copy/m)", "m (copy/m)", "m (results/m)", "m (results/m)"]


def test_report_refuses_a_masks_folder_that_does_not_exist(tmp_path, capsys):
    from tests.run_fixtures import write_run
    write_run(tmp_path / "m", "m", {("mvtec", "bottle"): ([0, 1, 2], [1, 5, 9])}, kind="mllm", settings={})
    assert cli.main(["report", str(tmp_path / "m"), "--json", "--masks", str(tmp_path / "nowhere")]) == 2
    assert "--masks" in capsys.readouterr().err
