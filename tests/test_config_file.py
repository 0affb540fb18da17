"""Project defaults as a user meets them (`mmad` in a subprocess): mmad.toml or [tool.mmad] in
pyproject.toml, precedence flag > environment > file > built-in, `mmad config`, `--help`, and a bad
file or variable as one line naming it (exit 2)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_industry_subset

ENV_KEYS = ("MMAD_DATA_ROOT", "MMAD_CACHE_DIR", "MMAD_PROVIDER", "MMAD_MODEL", "MMAD_BASE_URL", "MMAD_CONCURRENCY",
            "MMAD_RPM")


def mmad(cwd, *args, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    clean.update(OPENAI_API_KEY="k", **env)
    return subprocess.run([sys.executable, "-m", "mmad.cli", *args], env=clean, capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def settings(cwd, **env) -> dict:
    out = mmad(cwd, "config", "--json", **env)
    assert out.returncode == 0, out.stderr
    return {row["setting"]: (row["value"], row["source"]) for row in json.loads(out.stdout)["settings"]}


def test_precedence_flag_environment_file_builtin(tmp_path, server):
    make_industry_subset(tmp_path / "filedata", "toy", "widget", per_level=2)
    (tmp_path / "mmad.toml").write_text(
        f'root = "filedata"\ncache_dir = "filecache"\nprovider = "openai"\nmodel = "from-file"\n'
        f'base_url = "{server.openai_url}"\nrpm = 600\n')
    found = settings(tmp_path)
    assert found["root"] == (str(tmp_path / "filedata"), "mmad.toml")
    assert found["model"] == ("from-file", "mmad.toml") and found["rpm"] == (600.0, "mmad.toml")
    assert found["concurrency"] == (None, "built-in")
    assert settings(tmp_path, MMAD_MODEL="from-env")["model"] == ("from-env", "environment ($MMAD_MODEL)")

    # no --provider, --root, --base-url or --model on the command line: the file supplies them
    run = mmad(tmp_path, "score", "--dataset", "toy", "--out", "r1", "-q")
    assert run.returncode == 0, run.stderr
    assert {r.body["model"] for r in server.requests} == {"from-file"} and (tmp_path / "filecache").is_dir()
    sent = len(server.requests)
    run = mmad(tmp_path, "score", "--dataset", "toy", "--out", "r2", "-q", MMAD_MODEL="from-env")
    assert run.returncode == 0, run.stderr
    assert {r.body["model"] for r in server.requests[sent:]} == {"from-env"}
    sent = len(server.requests)
    run = mmad(tmp_path, "score", "--dataset", "toy", "--out", "r3", "--model", "from-flag", "-q", MMAD_MODEL="from-env")
    assert run.returncode == 0, run.stderr
    assert {r.body["model"] for r in server.requests[sent:]} == {"from-flag"}
    # the environment's data root beats the file's: the dataset is not there
    moved = mmad(tmp_path, "score", "--dataset", "toy", "--dry-run", MMAD_DATA_ROOT=str(tmp_path / "elsewhere"))
    assert moved.returncode == 2 and "elsewhere" in moved.stderr

    helptext = " ".join(mmad(tmp_path, "score", "--help", COLUMNS="1000").stdout.split())
    assert "(default: openai, from mmad.toml)" in helptext and "(default: 600, from mmad.toml)" in helptext
    assert f"else {tmp_path / 'filedata'} from mmad.toml" in helptext
    helptext = " ".join(mmad(tmp_path, "score", "--help", MMAD_RPM="7", COLUMNS="1000").stdout.split())
    assert "(default: 7, from environment ($MMAD_RPM))" in helptext


def test_pyproject_table_and_mmad_toml_first(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.mmad]\nprovider = "anthropic"\nconcurrency = 4\n')
    found = settings(tmp_path)
    assert found["provider"] == ("anthropic", "pyproject.toml [tool.mmad]") and found["concurrency"][0] == 4
    (tmp_path / "mmad.toml").write_text('provider = "openai"\n')
    assert settings(tmp_path)["provider"] == ("openai", "mmad.toml")
    assert settings(tmp_path)["concurrency"] == (None, "built-in")  # one file: mmad.toml wins whole
    text = mmad(tmp_path, "config").stdout
    assert "mmad.toml" in text and "$MMAD_CONCURRENCY" in text


@pytest.mark.parametrize(("content", "named"), [
    ('rpm = -5\n', "mmad.toml: rpm: expected a positive number"),
    ('concurrency = 2.5\n', "mmad.toml: concurrency: expected a positive integer"),
    ('provider = "gemini"\n', "mmad.toml: provider: expected one of openai, anthropic"),
    ('base_url = "localhost:8000"\n', "mmad.toml: base_url: expected an http:// or https:// URL"),
    ('colour = "red"\n', "mmad.toml: colour: unknown key"),
    ('rpm = \n', "mmad.toml: not valid TOML"),
])
def test_a_bad_file_is_one_line_naming_file_and_key(tmp_path, content, named):
    (tmp_path / "mmad.toml").write_text(content)
    for command in (("config",), ("eval", "x")):
        out = mmad(tmp_path, *command)
        assert out.returncode == 2 and named in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_bad_environment_value_names_the_variable(tmp_path):
    out = mmad(tmp_path, "config", MMAD_CONCURRENCY="many")
    assert out.returncode == 2 and "$MMAD_CONCURRENCY: concurrency: expected a positive integer" in out.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.mmad]\nrpm = "fast"\n')
    out = mmad(tmp_path, "config")
    assert out.returncode == 2 and "pyproject.toml [tool.mmad]: rpm: expected a positive number" in out.stderr
