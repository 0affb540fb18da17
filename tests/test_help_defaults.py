"""`--help` shows every option's default: each option has a help text, and an option whose default is a
value (not None, False or SUPPRESS) says it, as "(default: X)" or in the help's own words."""

import argparse
import re

import pytest

from mmad import cli


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the top-level parser and every subcommand, nested ones included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


COMMANDS = list(_commands(cli.build_parser()))
IDS = [" ".join(path) or "mmad" for path, _ in COMMANDS]


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if (action.option_strings and action.help != argparse.SUPPRESS
                and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            yield action


def _has_value_default(action: argparse.Action) -> bool:
    default = action.default
    if default is None or default is False or default == argparse.SUPPRESS:
        return False
    # --no-X switches (store_false): the flag's name states what not giving it means
    return not (isinstance(action.const, bool) and action.nargs == 0)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _help_output(path: tuple[str, ...], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main([*path, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_the_walk_reaches_nested_commands():
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"score", "eval", "compare", "baseline", "classify", "data synth", "qa run", "qa check",
            "qa compare", "cache rebuild"} <= paths


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=IDS)
def test_every_option_has_help(path, parser):
    missing = [action.option_strings[-1] for action in _options(parser) if not (action.help or "").strip()]
    assert not missing, f"mmad {' '.join(path)}: options without help text: {missing}"


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=IDS)
def test_help_shows_every_default(path, parser, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per help text, so each can be found whole
    output = _flat(_help_output(path, capsys))
    formatter = parser._get_formatter()
    problems = []
    for action in _options(parser):
        name = action.option_strings[-1]
        text = formatter._expand_help(action) if action.help else ""
        assert "(default: True)" not in text and "(default: False)" not in text, f"{name}: {text}"
        if not _has_value_default(action):
            continue
        if not text.strip():
            problems.append(f"{name} (default {action.default!r}): no help text, so --help shows no default")
        elif "(default: " not in text and "default" not in action.help:
            problems.append(f"{name} (default {action.default!r}): its help does not state the default: {text!r}")
        elif _flat(text) not in output:
            problems.append(f"{name}: its help {text!r} is not in the --help output")
    assert not problems, f"mmad {' '.join(path)} --help:\n" + "\n".join(problems)


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=IDS)
def test_no_boolean_defaults_in_help(path, parser, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")
    output = _help_output(path, capsys)
    assert "(default: True)" not in output and "(default: False)" not in output


def test_batch_limits_are_stated():
    parser = dict(COMMANDS)[("score",)]
    helps = {a.option_strings[-1]: a.help for a in parser._actions if a.option_strings}
    for option in ("--batch-max-requests", "--batch-max-mb"):
        assert "provider's limit" in helps[option] and "OpenAI" in helps[option] and "Anthropic" in helps[option]
