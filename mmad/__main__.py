"""The `mmad` command and `python -m mmad ...`. The command line is imported inside the guard, so a
Ctrl-C in the first moments, before the run's own signal handlers exist, is the same one line and
exit 130 as later, never a traceback. (Only the interpreter's own start-up, before any of mmad
runs, is out of reach.) SIGTERM outside a run's own handlers (start-up, writing the summary after
the run's loop ended) is taken as Ctrl-C too: one line and 130; once the exit code is decided and
said, a late SIGTERM is ignored while the interpreter shuts down (it would otherwise end the
process with 143 after its last line said something else)."""

from __future__ import annotations

import signal
import sys

INTERRUPTED = 130


def main() -> int:
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # one the parent set to be ignored stays ignored
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt
    try:
        from mmad.cli.main import main as run
        code = run()
    except KeyboardInterrupt:
        try:
            sys.stderr.write("interrupted\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        code = INTERRUPTED
    if signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the outcome is said: shut down with that code
    return code


if __name__ == "__main__":
    sys.exit(main())
