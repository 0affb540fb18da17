"""Prompt ablations end to end: a 2 prompts x 2 refs grid through the real SDK and the wire server
(which answers with a prompt-dependent amount of severity signal), then `mmad compare`."""

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmad.results.files import JsonlLog
from tests.conftest import cli_env, write_csv
from tests.wire_server import WireServer

LEVELS = 4
PER_LEVEL = 15


def graded_subset(root, dataset="toy", subset="widget"):
    """Images whose brightness carries their level, so the server can 'see' severity."""
    rng = np.random.default_rng(3)
    base = root / "Industry" / dataset / subset
    for i in range(5):
        path = base / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(30, 50, (24, 24, 3), dtype=np.uint8)).save(path)
    rows = []
    for level in range(LEVELS):
        for i in range(PER_LEVEL):
            rel = f"level_{level}/{i:03d}.png"
            path = base / "test" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            brightness = 40 + 50 * level
            Image.fromarray(rng.integers(brightness - 10, brightness + 10, (24, 24, 3), dtype=np.uint8)).save(path)
            rows.append([rel, str(level)])
    write_csv(root / "template" / f"{dataset}_{subset}_template.csv", ["Path", "Severity"], rows)


def graded_answer(received):
    """The paper prompt (a blank line before 'Image 4:') gets a clean severity signal; the
    scripts' prompt a noisy one; zero-shot texts something in between."""
    query = Image.open(io.BytesIO(base64.b64decode(received.images()[-1])))
    level = (np.asarray(query, dtype=float).mean() - 40) / 50
    noise = int(received.query_id()[:6], 16) % 41 - 20  # deterministic per image
    instruction = received.texts()[0]
    if "\n\nImage 4:" in instruction:
        score = 25 * level + noise * 0.2
    elif "Image 4:" in instruction:
        score = 25 * level + noise * 3
    else:
        score = 25 * level + noise * 1.5
    return f"Anomaly Score: {int(np.clip(round(score), 0, 100))}\nReason: graded."


@pytest.fixture
def setup(tmp_path):
    graded_subset(tmp_path / "data")
    server = WireServer(answer=graded_answer).start()
    yield tmp_path, server, cli_env(tmp_path)
    server.stop()


def mmad(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmad.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def test_grid_runs_every_variant_once_and_compare_finds_the_planted_effect(setup):
    tmp, server, env = setup
    grid = ["score", "--provider", "openai", "--model", "m", "--base-url", server.openai_url, "--dataset", "toy",
            "--prompt", "industrial,industrial-paper", "--refs", "0,3", "--out", str(tmp / "grid"), "-q"]
    dry = mmad(env, *grid, "--dry-run")
    assert dry.returncode == 0 and "240 jobs in 4 run(s)" in dry.stdout
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[3:7]]
            for line in dry.stdout.splitlines() if line.startswith("│ m")}
    # jobs, cached, identical, would send: the second zero-shot variant repeats the first's requests
    assert rows["m+refs0"] == ["60", "0", "0", "60"] and rows["m+industrial-paper+refs0"] == ["60", "0", "60", "0"]
    estimate = mmad(env, "estimate", *grid[1:-1])
    assert estimate.returncode == 0 and "m+industrial-paper" in estimate.stdout
    first = mmad(env, *grid)
    assert first.returncode == 0, first.stderr
    folders = sorted(p.name for p in (tmp / "grid").iterdir())
    assert folders == ["m", "m+industrial-paper", "m+industrial-paper+refs0", "m+refs0"]
    for folder in folders:
        info = json.loads((tmp / "grid" / folder / "run.json").read_text())
        assert info["run"] == folder and info["settings"]["task"] == "score"
        assert len(JsonlLog.read(tmp / "grid" / folder / f"{folder}_toy_widget.jsonl")) == 60
    # both zero-shot variants send the zero-shot text: identical requests, paid once
    paid = [r for r in server.paid if r.body.get("max_tokens") == 300]
    assert len(paid) == 180
    again = mmad(env, *grid)
    assert again.returncode == 0 and len([r for r in server.paid if r.body.get("max_tokens") == 300]) == 180
    clash = mmad(env, "score", "--provider", "openai", "--model", "m", "--base-url", server.openai_url, "--dataset",
                 "toy", "--refs", "1", "--out", str(tmp / "grid" / "m"), "--dry-run")
    assert clash.returncode == 2 and "the run would be refused" in clash.stderr and "refs: 3 -> 1" in clash.stderr
    # interleaved: the first requests went to every variant, not one after another
    firsts = [r.texts()[0] for r in paid[:12]]
    assert any("\n\nImage 4:" in t for t in firsts) and any("\nImage 4:" in t and "\n\nImage 4:" not in t
                                                             for t in firsts)
    planted = mmad(env, "compare", str(tmp / "grid" / "m"), str(tmp / "grid" / "m+industrial-paper"), "--json")
    assert planted.returncode == 0, planted.stderr
    verdicts = json.loads(planted.stdout)["comparisons"][0]["verdicts"]
    assert any("C-index" in v and "m+industrial-paper is higher" in v for v in verdicts), verdicts
    same = mmad(env, "compare", str(tmp / "grid" / "m+refs0"), str(tmp / "grid" / "m+industrial-paper+refs0"),
                "--json")
    verdicts = json.loads(same.stdout)["comparisons"][0]["verdicts"]
    assert all("no significant difference" in v for v in verdicts if ": " in v), verdicts


def test_experiment_file_reference_choice_and_repeats(setup):
    tmp, server, env = setup
    experiment = tmp / "ablation.toml"
    experiment.write_text('[[variant]]\nreference_choice = "first"\n'
                          '[[variant]]\nreference_choice = "random:7"\n'
                          '[[variant]]\nreference_choice = "similar"\nrefs = 2\n')
    base = ["score", "--provider", "openai", "--model", "m", "--base-url", server.openai_url, "--dataset", "toy",
            "--out", str(tmp / "exp"), "-q", "--sample", "12", "--seed", "1"]
    result = mmad(env, *base, "--experiment", str(experiment), "--repeats", "2")
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in (tmp / "exp").iterdir())
    assert folders == ["m+random7+sample12s1", "m+random7+sample12s1+r1", "m+refs2+similar+sample12s1",
                       "m+refs2+similar+sample12s1+r1", "m+sample12s1", "m+sample12s1+r1"]
    records = JsonlLog.read(tmp / "exp" / "m+sample12s1" / "m+sample12s1_toy_widget.jsonl")
    levels = sorted(r["severity"] for r in records)
    assert len(records) == 12 and levels.count(0.0) == levels.count(3.0) == 3  # stratified by level
    # a repeat is a new paid answer to the same request: 3 variants x 2 repeats x 12 jobs
    assert len([r for r in server.paid if r.body.get("max_tokens") == 300]) == 72
    similar = [r for r in server.requests if r.body.get("max_tokens") == 300 and len(r.images()) == 3]
    assert len(similar) == 24 and len({tuple(r.images()[:2]) for r in similar}) >= 1
    noise = mmad(env, "noise", str(tmp / "exp" / "m+sample12s1"), str(tmp / "exp" / "m+sample12s1+r1"), "--json")
    assert noise.returncode == 0, noise.stderr


def test_similar_references_are_the_closest_normal_images(tmp_path):
    from mmad.data import datasets, references
    graded_subset(tmp_path)
    subset = datasets.resolve(tmp_path, "toy", "widget")[0]
    pool = references.pool_of(subset)
    bright = tmp_path / "bright.png"
    Image.fromarray(np.full((24, 24, 3), 200, dtype=np.uint8)).save(bright)
    dark_copy = tmp_path / "copy.png"
    dark_copy.write_bytes(pool[2].read_bytes())
    [chosen_for_copy, chosen_for_bright] = references.choose(subset, 2, "similar", [dark_copy, bright])
    assert chosen_for_copy[0] == pool[2]  # its own twin first
    assert references.choose(subset, 3, "random:7", [bright]) == references.choose(subset, 3, "random:7", [bright])
    assert references.choose(subset, 3, "random:7", [bright]) != references.choose(subset, 3, "random:8", [bright])


# --------------------------------------------------------------------------- experiment files are checked like flags

def score_experiment(tmp_path, monkeypatch, text, *flags):
    """`mmad score --experiment` (dry run, nothing sent) on a file holding `text`: (exit code, stderr)."""
    from mmad import cli
    if not (tmp_path / "data").exists():
        graded_subset(tmp_path / "data")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "exp.toml"
    path.write_text(text)
    args = ["score", "--provider", "openai", "--root", str(tmp_path / "data"), "--dataset", "toy", "--dry-run",
            "-q", "--out", str(tmp_path / "out"), "--experiment", str(path), *flags]
    return cli.main(args), path


@pytest.mark.parametrize("text, table, key, says", [
    ("[grid]\nrefs = [0, 9]\n", "[grid]", "refs", "between 0 and 5, not 9"),
    ("[grid]\ntemperature = 7\n", "[grid]", "temperature", "between 0 and 2, not 7"),
    ("[grid]\ntemperature = nan\n", "[grid]", "temperature", "not a finite number"),
    ("[grid]\nrefs = []\n", "[grid]", "refs", "needs a value"),
    ("[grid]\nrefs = true\n", "[grid]", "refs", "expected an integer (as --refs), not true"),
    ("[grid]\nmax_height = [768, 10]\n", "[grid]", "max_height", "between 64 and 4096"),
    ("[grid]\nmodel = \"a,b\"\n", "[grid]", "model", "one name"),
    ("[grid]\nrepeat = [1]\n", "[grid]", "repeat", "unknown setting"),
    ("[[variant]]\n[[variant]]\nmax_tokens = 0\n", "[[variant]] #2", "max_tokens", "at least 1, not 0"),
    ("[[variant]]\nrefs = \"abc\"\n", "[[variant]] #1", "refs", "expected an integer (as --refs), not 'abc'"),
    ("[[variant]]\nrefs = 2.0\n", "[[variant]] #1", "refs", "expected an integer"),
    ("[[variant]]\ntemperature = \"hot\"\n", "[[variant]] #1", "temperature", "expected a number"),
    ("[[variant]]\nrefs = [1, 2]\n", "[[variant]] #1", "refs", "belongs in [grid]"),
    ("[[variant]]\ncorrupt = \"foo\"\n", "[[variant]] #1", "corrupt", "brightness:S or gaussian_noise:S"),
    ("[[variant]]\ncorrupt_references = \"yes\"\n", "[[variant]] #1", "corrupt_references", "true or false"),
    ("[[variant]]\nreference_choice = \"nearest\"\n", "[[variant]] #1", "reference_choice", "random:SEED"),
    ("[[variant]]\nreference_choice = \" \"\n", "[[variant]] #1", "reference_choice", "needs a value"),
    ("[[variant]]\ndetail = \"medium\"\n", "[[variant]] #1", "detail", "auto, low or high"),
    ("[[variant]]\nprompt = \"\"\n", "[[variant]] #1", "prompt", "needs a value"),
    ("[[variant]]\nsample = 0\n", "[[variant]] #1", "sample", "at least 1"),
    ("[[variant]]\nsample_seed = 1.5\n", "[[variant]] #1", "sample_seed", "(as --seed)"),
    ("[[variant]]\nrepeat = 2\n", "[[variant]] #1", "repeat", "--repeats"),
    ("[[variant]]\nbogus = 1\n", "[[variant]] #1", "bogus", "unknown setting"),
])
def test_a_bad_experiment_value_is_one_line_naming_file_table_and_key(tmp_path, monkeypatch, capsys, text, table,
                                                                       key, says):
    code, path = score_experiment(tmp_path, monkeypatch, text)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{path}: {table}: {key}: " in err and says in err, err


@pytest.mark.parametrize("text, says", [
    ("[variant]\nrefs = 1\n", "[[variant]] table"),
    ("grid = 3\n", "[grid] table"),
    ("[grids]\nrefs = [1]\n", "unknown table(s) or key(s) grids"),
    ("", "no [[variant]] tables and no [grid]"),
])
def test_a_misshapen_experiment_file_is_one_line(tmp_path, monkeypatch, capsys, text, says):
    code, path = score_experiment(tmp_path, monkeypatch, text)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err and says in err, err


@pytest.mark.parametrize("key, flag, value, toml", [
    ("refs", "--refs", "9", "9"), ("refs", "--refs", "-1", "-1"), ("temperature", "--temperature", "7", "7"),
    ("temperature", "--temperature", "-0.5", "-0.5"), ("max_tokens", "--max-tokens", "0", "0"),
    ("max_height", "--max-height", "10", "10"), ("detail", "--detail", "medium", '"medium"'),
    ("corrupt", "--corrupt", "brightness:9", '"brightness:9"'), ("sample", "--sample", "0", "0"),
    ("reference_choice", "--reference-choice", "random:x", '"random:x"'),
])
def test_the_file_and_the_flag_refuse_with_the_same_words(tmp_path, monkeypatch, capsys, key, flag, value, toml):
    from mmad import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["score", "--provider", "openai", "--dataset", "toy", f"{flag}={value}"])
    flag_err = capsys.readouterr().err
    assert exit_info.value.code == 2
    reason = flag_err.split(f"argument {flag}: ", 1)[1].rsplit(" (see ", 1)[0]
    code, _ = score_experiment(tmp_path, monkeypatch, f"[[variant]]\n{key} = {toml}\n")
    file_err = capsys.readouterr().err.strip()
    assert code == 2 and file_err.endswith(f"[[variant]] #1: {key}: {reason}"), (flag_err, file_err)


def test_every_variant_setting_has_one_shared_check():
    from dataclasses import fields

    from mmad.scoring.value_checks import SETTINGS
    from mmad.scoring.variants import GRID_FIELDS, Variant
    assert set(SETTINGS) | {"repeat"} == {f.name for f in fields(Variant)}  # repeat: --repeats only
    assert set(GRID_FIELDS) <= set(SETTINGS)


def test_a_good_experiment_file_gives_normalised_variants(tmp_path, monkeypatch, capsys):
    from mmad.scoring.variants import Variant, load_experiment
    text = ('[grid]\nrefs = [0, 5]\ntemperature = [0, 0.7]\nmax_height = [768, "auto"]\n'
            '[[variant]]\nprompt = " industrial-paper "\nrefs = 2\nreference_choice = "random:07"\ntemperature = 1\n'
            'max_tokens = 100\nmax_height = "512"\ncorrupt = "brightness:2"\ncorrupt_references = true\n'
            'sample = 4\nsample_seed = -3\nmodel = "m2"\ndetail = "low"\n')
    code, path = score_experiment(tmp_path, monkeypatch, text)
    assert code == 0, capsys.readouterr().err
    assert "484 jobs in 9 run(s)" in " ".join(capsys.readouterr().out.split())  # 8 grid runs x 60, 4 sampled
    variants = load_experiment(path, Variant(model="m"))
    first = variants[0]
    assert (first.prompt, first.reference_choice, first.temperature, first.max_height, first.sample_seed) == (
        "industrial-paper", "random:7", 1.0, "512", -3)
    assert {v.max_height for v in variants[1:]} == {"768", "auto"} and len(variants) == 9


@pytest.mark.parametrize("text, flags, says", [
    ("[[variant]]\nrefs = 1\n[[variant]]\nrefs = 1\n", (), "is listed twice"),
    ("[grid]\nrefs = [0, 3]\n", ("--refs", "1,2"), "sets refs that --refs also sets; set it in one place"),
    ("[[variant]]\ntemperature = 1.0\n", ("--temperature", "0.5"), "sets temperature that --temperature also sets"),
    ("[[variant]]\nprompt = \"nosuchprompt\"\n", (), "prompt: unknown prompt 'nosuchprompt'"),
    ("[[variant]]\nprompt = \"missing.toml\"\n", (), "prompt: prompt file missing.toml not found"),
])
def test_an_experiment_that_clashes_with_itself_or_the_flags_names_the_file(tmp_path, monkeypatch, capsys, text,
                                                                             flags, says):
    code, path = score_experiment(tmp_path, monkeypatch, text, *flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and says in err, err
    assert str(path) in err


def test_an_experiment_folder_is_exit_2_and_a_byte_order_mark_is_fine(tmp_path, monkeypatch, capsys):
    from mmad import cli
    code, path = score_experiment(tmp_path, monkeypatch, "[[variant]]\nrefs = 1\n")
    folder = tmp_path / "exp-dir.toml"
    folder.mkdir()
    args = ["score", "--provider", "openai", "--root", str(tmp_path / "data"), "--dataset", "toy", "--dry-run", "-q",
            "--out", str(tmp_path / "out"), "--experiment", str(folder)]
    capsys.readouterr()
    assert cli.main(args) == 2 and "is a folder" in capsys.readouterr().err
    path.write_bytes(b"\xef\xbb\xbf[[variant]]\nrefs = 1\n")  # saved by an editor that writes a BOM
    args[-1] = str(path)
    assert cli.main(args) == 0, capsys.readouterr().err


def test_a_prompt_that_is_a_folder_says_so(tmp_path, monkeypatch, capsys):
    from mmad import cli
    graded_subset(tmp_path / "data")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "my-prompts").mkdir()
    code = cli.main(["score", "--provider", "openai", "--root", str(tmp_path / "data"), "--dataset", "toy",
                     "--dry-run", "-q", "--prompt", str(tmp_path / "my-prompts")])
    err = capsys.readouterr().err
    assert code == 2 and "is a folder" in err and "--prompts-dir" in err and len(err.strip().splitlines()) == 1
