"""`python -m mmad.cli ...`: the same as the `mmad` command (SIGTERM outside a run's own handlers
is taken as Ctrl-C, as `mmad.__main__` does)."""

import signal
import sys

if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, signal.default_int_handler)

from mmad.cli.main import main  # noqa: E402

code = main()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the outcome is said: shut down with that code
sys.exit(code)
