"""Command line: the parser (each command module registers its own) and the exit codes.

Only the CLI prints. Library errors (`MmadError`) become one line on stderr and a non-zero exit
(the codes are listed in mmad.errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mmad.cli import classify, compare, data, detect, hybrid, qa, report, score, view
from mmad.cli import config as config_command
from mmad.cli import eval as eval_command
from mmad.cli.options import HelpFormatter, Parser
from mmad.cli.output import err_console
from mmad.errors import PATH_MISTAKES, MmadError, NotRegularFile, StorageError, describe_os_error, os_failure
from mmad.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mmad", description="Measure how well anomaly scores follow anomaly severity (MAD-Bench): "
                                 "score datasets with MLLMs or conventional detectors, then evaluate.",
        formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (data, eval_command, score, detect, report, compare, qa, hybrid, classify, config_command, view):
        command.register(sub)
    return parser


BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE (`mmad ... | head`)
INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in mmad, not in the input


def main(argv: Sequence[str] | None = None) -> int:
    try:  # the parser's defaults come from the environment and the project file: a bad one is one line
        parser = build_parser()
    except MmadError as exc:
        return _fail(str(exc), exc.exit_code)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MmadError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except BrokenPipeError:  # the reader left (`| head`): what it read is all it wanted; say nothing more
        _silence_stdout()
        return BROKEN_PIPE
    except OSError as exc:  # a file no command anticipated: still one line naming it
        return _fail(*os_error_line(exc))
    except Exception as exc:  # a bug: one line, and the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        return _fail(f"internal error, please report it: {type(exc).__name__}: {exc} "
                     f"(set {DEBUG_ENV}=1 for the traceback)", INTERNAL_ERROR)


DEBUG_ENV = "MMAD_DEBUG"


def os_error_line(exc: OSError) -> tuple[str, int]:
    """(message, exit code) of an OSError no command anticipated: a path that cannot be one is bad
    input (2); anything else is the disk's trouble (7)."""
    if isinstance(exc, NotRegularFile) or (exc.errno in PATH_MISTAKES and exc.filename):
        return str(os_failure("", exc.filename, exc)), MmadError.exit_code
    return describe_os_error(exc.filename or "a file", exc), StorageError.exit_code


def _fail(message: str, code: int) -> int:
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

