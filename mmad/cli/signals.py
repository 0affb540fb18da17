"""Ctrl-C and SIGTERM during a run: the first stops it gently (requests in flight finish and are
stored, nothing new is sent), the second aborts. Shared by `mmad score` and `mmad qa run`
(`install_stop_handlers`, inside asyncio) and by detector runs (`stop_signals`, synchronous)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_FIRST = {
    signal.SIGINT: "interrupted (Ctrl-C); finishing requests in flight (Ctrl-C again aborts)",
    signal.SIGTERM: "terminated (SIGTERM); finishing requests in flight (a second signal aborts)",
}
ABORTED = "aborted; rerun the same command to resume"


def signal_said(sig: int) -> str:
    """Which signal arrived, as the stop lines name it: `interrupted (Ctrl-C)`, `terminated (SIGTERM)`."""
    return _FIRST[signal.Signals(sig)].split(";")[0]


def install_stop_handlers(stop: Callable[[str], bool], abort: Callable[[], object]) -> None:
    """On the running loop: the first signal calls `stop(reason)`, which returns whether there was
    a run to stop; a second signal (or one with nothing to stop) calls `abort()`. A signal the
    parent process set to be ignored stays ignored, as the shell's `&` means it to.

    The handlers are the process's own (`signal.signal`), not the loop's: asyncio puts SIGTERM back
    to the default when its loop closes, so a second SIGTERM while the run writes its summary
    would kill the process (exit 143) instead of aborting it (130). Once the loop has stopped, a
    signal raises `Aborted` where the main thread is."""
    loop = asyncio.get_running_loop()
    received = {"n": 0}

    def on_signal(sig: signal.Signals) -> None:
        received["n"] += 1
        if received["n"] > 1 or not stop(_FIRST[sig]):
            abort()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not loop.is_running():  # the run is over (its summary being written) or not yet begun
            raise Aborted()
        try:
            loop.call_soon_threadsafe(on_signal, signal.Signals(signum))
        except RuntimeError:  # closed between the check and the call
            raise Aborted() from None

    for sig in _FIRST:
        if signal.getsignal(sig) == signal.SIG_IGN:
            continue  # ignored by whoever started us (a background job, nohup): keep ignoring it
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals stay as they were
            pass


class Aborted(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM during a synchronous run: raised wherever the main thread is, so
    atomic writes in progress remove their temporary file on the way out."""


class StopSignals:
    """What `stop_signals` hands out: `reason` is None until the first signal arrives."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def requested(self) -> bool:
        return self.reason is not None

    def _on_signal(self, signum: int, frame) -> None:
        if self.reason is not None:
            raise Aborted()
        self.reason = signal_said(signum)


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """The synchronous `install_stop_handlers` (detector runs): inside the block the first SIGINT or
    SIGTERM only sets `reason` (the run polls `requested()` between batches and stops there); a
    second raises `Aborted`. A signal the parent set to be ignored stays ignored. The previous
    handlers are back when the block ends."""
    stops = StopSignals()
    previous: dict[signal.Signals, Callable[[int, FrameType | None], object] | int] = {}
    try:
        for sig in _FIRST:
            handler = signal.getsignal(sig)
            if handler == signal.SIG_IGN:
                continue  # ignored by whoever started us (a background job, nohup): keep ignoring it
            try:
                signal.signal(sig, stops._on_signal)
            except ValueError:  # not the main thread: signals stay as they were
                continue
            previous[sig] = handler if handler is not None else signal.SIG_DFL
        yield stops
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
