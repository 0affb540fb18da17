"""The `mmad` command and `python -m mmad ...`. The command line is imported inside the guard, so a
Ctrl-C in the first moments, before the run's own signal handlers exist, is the same one line and
exit 130 as later, never a traceback. (Only the interpreter's own start-up, before any of mmad
runs, is out of reach.)"""

from __future__ import annotations

import sys

INTERRUPTED = 130


def main() -> int:
    try:
        from mmad.cli.main import main as run
        return run()
    except KeyboardInterrupt:
        try:
            sys.stderr.write("interrupted\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
