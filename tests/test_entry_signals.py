"""The `mmad` entry point's own SIGTERM handling: outside a run's handlers SIGTERM is Ctrl-C (one
line, 130), and once the command has said its outcome a late SIGTERM cannot turn it into 143."""

import importlib
import os
import signal
import time

import pytest

import mmad.__main__ as entry

cli_main = importlib.import_module("mmad.cli.main")  # the module (mmad.cli.main is also the function)


@pytest.fixture
def restored_sigterm():
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, before)


def test_sigterm_outside_a_run_is_an_interrupt_and_a_late_one_is_ignored(restored_sigterm, monkeypatch, capsys):
    def command():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not interrupt the command")
    monkeypatch.setattr(cli_main, "main", command)
    assert entry.main() == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the outcome is said: exit with it


def test_a_finished_command_keeps_its_exit_code(restored_sigterm, monkeypatch):
    monkeypatch.setattr(cli_main, "main", lambda: 6)
    assert entry.main() == 6
    os.kill(os.getpid(), signal.SIGTERM)  # ignored: this process (pytest) goes on
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_a_sigterm_the_parent_ignores_stays_ignored(monkeypatch):
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seen = []
    monkeypatch.setattr(cli_main, "main", lambda: seen.append(signal.getsignal(signal.SIGTERM)) or 0)
    try:
        assert entry.main() == 0
        assert seen == [signal.SIG_IGN]
    finally:
        signal.signal(signal.SIGTERM, before)
