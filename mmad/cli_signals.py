"""Ctrl-C and SIGTERM during a run: the first stops it gently (requests in flight finish and are
stored, nothing new is sent), the second aborts. Shared by `mmad score` and `mmad qa run`."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

_FIRST = {
    signal.SIGINT: "interrupted (Ctrl-C); finishing requests in flight (Ctrl-C again aborts)",
    signal.SIGTERM: "terminated (SIGTERM); finishing requests in flight (a second signal aborts)",
}


def install_stop_handlers(stop: Callable[[str], bool], abort: Callable[[], None]) -> None:
    """On the running loop: the first signal calls `stop(reason)`, which returns whether there was
    a run to stop; a second signal (or one with nothing to stop) calls `abort()`. A signal the
    parent process set to be ignored stays ignored, as the shell's `&` means it to."""
    loop = asyncio.get_running_loop()
    received = {"n": 0}

    def on_signal(sig: signal.Signals) -> None:
        received["n"] += 1
        if received["n"] > 1 or not stop(_FIRST[sig]):
            abort()

    for sig in _FIRST:
        if signal.getsignal(sig) == signal.SIG_IGN:
            continue  # ignored by whoever started us (a background job, nohup): keep ignoring it
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
