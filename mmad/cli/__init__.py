"""The command line, the top floor: parse arguments, call the library, print, choose the exit code.

One module per command (`score`, `estimate`, `detect`, `eval`, `compare`, `report`, `data`,
`hybrid`, `qa`, `classify`) plus what they share: `options` (flags and their checks), `output`
(consoles and tables), `progress` (the live view of a run), `signals` (Ctrl-C / SIGTERM).
Only this package prints, and nothing outside it imports it.
"""

from mmad.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
