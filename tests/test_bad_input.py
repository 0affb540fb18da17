"""Bad input is one line naming what is wrong, exit 2, and changes nothing: the cases that used to
exit 0 (a FIFO or a link replaced by a report, a malformed run.json overwritten, a severity of
1e308), exit 70 (user mistakes reported as bugs) or blame the wrong thing. `mmad` runs as a
user runs it, in a subprocess; FIFOs, links and loops are made in the test's own folder."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.cli_support import jobs_sent, mmad, one_error, score_args, without_override
from tests.conftest import cli_env, make_industry_subset, write_csv


@pytest.fixture
def env(tmp_path):
    make_industry_subset(tmp_path / "data", "toy", "widget")
    return cli_env(tmp_path)


def result_run(folder, severity="2", name="m"):
    """A finished run folder with one result CSV (what eval, report and export read)."""
    rows = [[f"good_level_0/{i:03d}.png", "0", str(i)] for i in range(3)]
    rows += [[f"defect_level_1/{i:03d}.png", severity if i == 1 else "1", str(10 + i)] for i in range(3)]
    return write_csv(folder / f"{name}_mvtec_bottle.csv", ["Path", "Severity", "Anomaly Score"], rows).parent


# --------------------------------------------------------------------------- what a write may replace

def _make(kind: str, path, tmp_path):
    target = tmp_path / "mine.txt"
    target.write_text("keep me")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "symlink to a file":
        path.symlink_to(target)
    elif kind == "symlink loop":
        path.symlink_to(path.with_name("loop-b"))
        path.with_name("loop-b").symlink_to(path)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node (in the test's folder) needs root")
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "folder":
        path.mkdir()
    return os.lstat(path)


@pytest.mark.parametrize("kind, says", [
    ("fifo", "is a FIFO (named pipe), not a regular file"), ("dangling symlink", "is a dangling symlink"),
    ("symlink to a file", "is a symlink (to "), ("symlink loop", "is a symlink loop"),
    ("device", "is a character device, not a regular file"), ("folder", "is a folder, not a regular file"),
])
def test_a_write_never_replaces_what_is_not_a_regular_file(tmp_path, env, kind, says):
    run = result_run(tmp_path / "run")
    target = tmp_path / "report.json"
    before = _make(kind, target, tmp_path)
    result = mmad(env, "report", run, "--json", "-o", target, "--root", tmp_path / "data")
    line = one_error(result, 2)
    assert str(target) in line and says in line, line
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)  # the very same node, untouched
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".report.json.*.tmp"))


def test_a_failed_write_names_the_target_never_its_temporary(tmp_path, env):
    run = result_run(tmp_path / "run")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = mmad(env, "report", run, "--json", "-o", locked / "report.json", "--root", tmp_path / "data",
                      preexec_fn=without_override)
    finally:
        locked.chmod(0o755)
    line = one_error(result, 7)
    assert f"{locked / 'report.json'}: [Errno 13]" in line and ".tmp" not in line, line


# --------------------------------------------------------------------------- run.json

@pytest.mark.parametrize("content, says", [
    ("not json {", "malformed run.json (not JSON"),
    ('{"mmad_run": 1, "run": "m", "settings": [1, 2]}', "`settings` is a list, not an object"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"run": "m", "settings": {}}', "no `mmad_run` schema number"),
])
def test_a_run_json_that_cannot_be_read_is_refused_never_overwritten(tmp_path, env, server, content, says):
    out = result_run(tmp_path / "out")
    (out / "run.json").write_text(content)
    scored = mmad(env, *score_args(server.openai_url, out))
    line = one_error(scored, 2)
    assert str(out / "run.json") in line and says in line and "--fresh starts this folder over" in line, line
    assert (out / "run.json").read_text() == content and not jobs_sent(server)
    if "settings" not in says:
        return  # the readers are checked on the issue's own case: `settings` that is not an object
    for command in (["eval", out], ["report", out, "--json"], ["compare", out, out]):
        line = one_error(mmad(env, *command), 2)
        assert str(out / "run.json") in line and says in line, (command, line)


def test_a_run_json_that_is_a_folder_is_named_as_one(tmp_path, env, server):
    out = result_run(tmp_path / "out")
    (out / "run.json").mkdir()
    line = one_error(mmad(env, *score_args(server.openai_url, out)), 2)
    assert "run.json: a run.json that is a folder, not a file" in line


# --------------------------------------------------------------------------- values

@pytest.mark.parametrize("severity", ["1e308", "inf", "-1", "1001"])
def test_a_severity_out_of_range_is_refused_with_its_line(tmp_path, env, severity):
    run = result_run(tmp_path / "run", severity=severity)
    line = one_error(mmad(env, "eval", run), 2)
    assert "m_mvtec_bottle.csv" in line and "line(s) 6" in line and "from 0 to 1000" in line, line


@pytest.mark.parametrize("args, says", [
    (["data", "synth", "--size", "99999999"], "--size: must be at most 500 pixels"),
    (["data", "synth", "--size", "1"], "--size: must be at least 32"),
    (["data", "synth", "--seed", "-1"], "--seed: must be 0 or more"),
    (["eval", "RUN", "--bootstrap", "1000000000"], "--bootstrap: must be 0 (off) or between 100 and 20,000"),
    (["compare", "RUN", "RUN", "--bootstrap", "1000000000"], "--bootstrap: must be at most 20,000"),
    (["score", "--provider", "openai", "--dataset", "toy", "--max-tokens", "99999999999"],
     "--max-tokens: must be at most 200,000 tokens"),
    (["score", "--provider", "openai", "--dataset", "toy", "--run-name", "ñn"], "use ASCII letters, digits"),
    (["score", "--provider", "openai", "--dataset", "toy", "--model", "m" * 10_000], "at most 200"),
])
def test_values_out_of_bounds_are_one_line(tmp_path, env, args, says):
    run = result_run(tmp_path / "run")
    where = ["--root", str(tmp_path / "synth")] if args[0] == "data" else []
    result = mmad(env, *[str(run) if a == "RUN" else a for a in args], *where, timeout=60)
    line = one_error(result, 2)
    assert says in line and len(result.stderr) < 400, line
    assert not (tmp_path / "synth").exists()


def test_what_used_to_be_accepted_without_a_word(tmp_path, env, server):
    run = result_run(tmp_path / "run")
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."m"]\ninput = -1.0\noutput = 2.0\n')
    line = one_error(mmad(env, "estimate", "--provider", "openai", "--model", "m", "--base-url", server.openai_url,
                          "--dataset", "toy", "--prices", prices), 2)
    assert f"{prices}: model 'm': input must be between 0 and" in line
    (tmp_path / "masks").mkdir()
    line = one_error(mmad(env, "report", run, "--json", "--masks", tmp_path / "masks"), 2)
    assert "--masks" in line and "no mask files in it" in line
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = one_error(mmad(env, "data", "list", "--root", a_file), 2)
    assert f"the data root {a_file} is a regular file, not a folder" in line
    for command in (["cache", "check", "--cache-dir", a_file], ["cache", "rebuild", "--cache-dir", a_file, "--from", run],
                    score_args(server.openai_url, tmp_path / "out", "--cache-dir", str(a_file))):
        line = one_error(mmad(env, *command), 2)
        assert f"the response cache folder {a_file} is a regular file, not a folder" in line, (command, line)
    assert a_file.read_text() == "x" and not jobs_sent(server)


# --------------------------------------------------------------------------- blaming the right thing

@pytest.mark.parametrize("kind, says", [
    ("symlink loop", "is a symlink loop"), ("fifo", "is a FIFO (named pipe)"), ("file", "is a regular file"),
])
def test_a_path_is_named_for_what_it_is(tmp_path, env, server, kind, says):
    path = tmp_path / "odd"
    if kind == "file":
        path.write_text("x")
    else:
        _make(kind, path, tmp_path)
    line = one_error(mmad(env, *score_args(server.openai_url, tmp_path / "out", "--root", str(path))), 2)
    assert f"the data root {path} {says}, not a folder" in line, line
    line = one_error(mmad(env, "eval", path), 2)
    assert str(path) in line and (says in line or kind == "file"), line  # a file is read, and named
    assert not jobs_sent(server)


def test_path_mistakes_are_bad_input_not_storage(tmp_path, env, server):
    out = tmp_path / ("x" * 300)
    line = one_error(mmad(env, *score_args(server.openai_url, out)), 2)
    assert "a path too long for this system" in line and "characters)" in line and len(line) < 400, line
    missing = tmp_path / "file" / "prices.toml"
    (tmp_path / "file").write_text("")
    line = one_error(mmad(dict(env, MMAD_PRICES=str(missing)), "estimate", "--provider", "openai", "--model", "m",
                          "--base-url", server.openai_url, "--dataset", "toy"), 2)
    assert f"price file $MMAD_PRICES {missing} cannot be read: Not a directory" in line, line


@pytest.mark.parametrize("url, key, says", [
    ("not-a-url", "k", "--base-url not-a-url: not a URL"),
    ("http://127.0.0.1:99999/v1", "k", "the port is out of range (ports are 1-65535)"),
    (None, " ", "OPENAI_API_KEY is set but blank"),
    (None, "sk-abc\n", "OPENAI_API_KEY holds a space, line break or control character"),
])
def test_a_bad_url_or_key_is_the_users_to_fix_before_any_request(tmp_path, env, server, url, key, says):
    result = mmad(dict(env, OPENAI_API_KEY=key), *score_args(url or server.openai_url, tmp_path / "out"))
    line = one_error(result, 2)
    assert says in line and len(result.stderr.splitlines()) == 1, result.stderr
    assert not server.requests


@pytest.mark.parametrize("task", ["qa", "classify"])
def test_compare_and_export_on_another_tasks_run_point_to_its_task(tmp_path, env, task):
    base = result_run(tmp_path / "base")
    other = tmp_path / "other"
    write_csv(other / "m_answers.csv", ["question", "answer"], [["q1", "A"]])
    (other / "run.json").write_text(json.dumps({"mmad_run": 1, "run": "o", "kind": "mllm", "settings": {"task": task}}))
    for command in (["compare", base, other], ["export", other, "--reference-format"]):
        line = one_error(mmad(env, *command), 2)
        assert f"`mmad eval --task {task}`" in line and str(other) in line, (command, line)


@pytest.mark.parametrize("fault", ["html_404", "html_501"])
def test_anthropic_given_v1_says_where_the_request_went(tmp_path, env, server, fault):
    from tests.wire_server import Fault
    server.fault_rule = lambda received, n: Fault(fault) if received.route.startswith("/v1/v1/") else None
    url = server.anthropic_url + "/v1"
    line = one_error(mmad(env, *score_args(url, tmp_path / "out", provider="anthropic")), 3)
    assert f"the request went to {url}/v1/messages: drop the /v1" in line, line
    assert len(server.requests) == 1
