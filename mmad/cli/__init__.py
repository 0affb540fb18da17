"""The command line, the top floor: parse arguments, call the library, print, choose the exit code.

One module per command (`score`, `estimate`, `detect`, `eval`, `compare`, `report`, `data`,
`hybrid`, `qa`, `classify`) plus what they share: `options` (flags and their checks), `output`
(consoles and tables), `progress` (the live view of a run), `signals` (Ctrl-C / SIGTERM), and
`entry` (the `mmad` command itself: a Ctrl-C while the rest is still being imported is one line).
Only this package prints, and nothing outside it imports it. `main` and `build_parser` are loaded
on first use, so that importing `mmad.cli.entry` costs nothing.
"""

__all__ = ["build_parser", "main"]


def __getattr__(name: str):
    if name in __all__:
        from mmad.cli import main as module
        return getattr(module, name)
    raise AttributeError(f"module 'mmad.cli' has no attribute {name!r}")
