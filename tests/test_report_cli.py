"""`mmad report`: --json carries every analysis; the HTML says why a section is empty; errors are
one line; verdicts from `mmad compare` can be passed in."""

from __future__ import annotations

import builtins
import json

from mmad import cli
from mmad.report.data import build_report
from tests.run_fixtures import write_run

SEV = [0, 0, 1, 2, 3]


def three_runs(tmp_path):
    write_run(tmp_path / "a", "a", {("mvtec", "bottle"): (SEV, [1, 2, 3, 4, 5])}, kind="mllm",
              settings={"model": "gpt-4o", "prompt": "industrial"})
    write_run(tmp_path / "b", "b", {("mvtec", "bottle"): (SEV, [1, 2, 4, 3, 5])}, kind="mllm",
              settings={"model": "gpt-4o", "prompt": "industrial-paper"})
    write_run(tmp_path / "c", "c", {("mvtec", "bottle"): (SEV, [2, 1, 3, 5, None])}, source="local")
    return [tmp_path / n for n in "abc"]


def test_json_has_every_analysis(tmp_path, capsys):
    folders = three_runs(tmp_path)
    assert cli.main(["report", *map(str, folders), "--json", "--root", str(tmp_path / "none")]) == 0
    data = json.loads(capsys.readouterr().out)  # strict JSON: NaN would not parse back as a number
    assert {"table3", "rank_agreement", "area", "auroc_by_level", "normal_expansion", "robustness", "spend",
            "verdicts", "subsets", "runs"} <= set(data)
    assert [r["run"] for r in data["table3"]["rows"]] == ["a", "b", "c"]
    assert [r["family"] for r in data["runs"]] == ["mllm", "mllm", "detector"]
    assert data["rank_agreement"]["runs_ranked"] == 3
    assert data["auroc_by_level"]["a"]["mvtec"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert data["spend"][2]["dropped"] == 1
    assert data["variants"] == ["a vs b: prompt: 'industrial' -> 'industrial-paper'"]
    assert data["verdicts"] and all(v.startswith("b vs a") for v in data["verdicts"])  # mmad compare ran


def test_json_to_a_file(tmp_path, capsys):
    folders = three_runs(tmp_path)
    out = tmp_path / "report.json"
    assert cli.main(["report", *map(str, folders), "--json", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads(out.read_text())["ties"] == "half"


def test_html_says_why_sections_are_empty(tmp_path, capsys):
    folders = three_runs(tmp_path)
    out = tmp_path / "r.html"
    assert cli.main(["report", *map(str, folders), "-o", str(out), "--root", str(tmp_path / "none")]) == 0
    captured = capsys.readouterr()
    assert "RQ3 skipped" in captured.err and "RQ6 skipped" in captured.err
    page = out.read_text()
    assert "No ground-truth masks were found" in page
    assert "No corrupted runs among the inputs" in page
    assert "b vs a, mvtec: C-index" in page  # mmad compare ran on the variant pair
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert page.count("<img ") >= 3


def test_without_compare_the_variants_are_listed(tmp_path):
    folders = three_runs(tmp_path)
    out = tmp_path / "r.html"
    assert cli.main(["report", *map(str, folders), "-o", str(out), "--root", str(tmp_path / "none"),
                     "--no-compare"]) == 0
    assert "No verdicts were passed to this report" in out.read_text()


def test_verdicts_are_shown(tmp_path):
    from mmad.report.html import render_html

    data = build_report(three_runs(tmp_path), data_root=tmp_path, verdicts=["b is worse than a on C (p = 0.01)"])
    page = render_html(data)
    assert "b is worse than a on C (p = 0.01)" in page and "No verdicts were passed" not in page


def test_missing_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert cli.main(["report", *map(str, three_runs(tmp_path)), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: the HTML report needs matplotlib: pip install 'mmad[report]' "
                   "(or use --json, which needs nothing more)")
    assert not (tmp_path / "r.html").exists()


def test_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "no-such-run")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'no-such-run'}: no such file or folder"


def test_two_files_for_one_subset_is_an_error(tmp_path, capsys):
    import shutil

    folder = write_run(tmp_path / "a", "a", {("mvtec", "bottle"): (SEV, [1, 2, 3, 4, 5])}, kind="mllm")
    for suffix in (".csv", ".jsonl"):  # run.json names every file in the folder run "a"
        shutil.copy(folder / f"a_mvtec_bottle{suffix}", folder / f"a2_mvtec_bottle{suffix}")
    assert cli.main(["report", str(folder), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run 'a' has two result files for mvtec/bottle:") and "\n" not in err
