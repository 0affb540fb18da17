"""What `mmad score` shows while it runs and when it ends, and the summary.json it leaves.

On a terminal: one progress bar whose stats line carries requests/s, cache hits, failures,
tokens, spend, and the 429 pauses and retries as counts (not a line each); while everyone waits
(a 429's retry-after, a limit until its reset) it says what for and until when. Not on a
terminal (a log file, CI): a progress line every `--progress-every` seconds. Only a stop prints a
line of its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mmad.cli.output import err_console
from mmad.engine.events import BatchSubmitted, JobFinished, OtherModel, Paused, Retrying, RunStarted, RunStopped


class ProgressView:
    """Turns engine events into a progress display."""

    def __init__(self, *, quiet: bool, every: float, meter=None) -> None:
        self.quiet = quiet
        self.every = every
        self.meter = meter
        self.tty = err_console.is_terminal
        self.counts: Counter = Counter()
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self.tokens = 0
        self.waiting: tuple[float, str] | None = None  # (until, what for) of the latest shared pause
        self._progress = None
        self._task = None
        self._ticker: asyncio.Task | None = None
        self._started = False
        if not quiet and self.tty:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), console=err_console,
                                      transient=False)
            self._task = self._progress.add_task("scoring", total=None, stats="")

    def __enter__(self) -> ProgressView:
        """The display starts with the run (its RunStarted event), after the checks that may refuse it."""
        return self

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._progress is not None:
            self._progress.start()
        elif not self.quiet:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def __exit__(self, *exc) -> None:
        if self._progress is not None and self._started:
            self._progress.stop()
        if self._ticker is not None:
            self._ticker.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            err_console.print(f"progress: {self.done}/{self.total} {self.stats()}", markup=False, highlight=False)

    def stats(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        failures = " ".join(f"{k}={self.counts[k]}" for k in ("parse_failed", "refused", "error") if self.counts.get(k))
        waits = " ".join(f"{k} {self.counts[k]}" for k in ("429 pauses", "retries") if self.counts.get(k))
        spend = f"${self.meter.spent:,.4f}  " if self.meter is not None and self.meter.price is not None else ""
        line = (f"{self.counts.get('live', 0) / elapsed:.1f} req/s  cache {self.counts.get('cache', 0)}  "
                f"tokens {self.tokens:,}  {spend}{failures}  {waits}").rstrip()
        if self.waiting is not None and self.waiting[0] > time.time():
            until = time.strftime("%H:%M:%S", time.localtime(self.waiting[0]))
            line += f"  waiting until {until}: {self.waiting[1]}"
        return line

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            self._start()
            self.total, self.done = event.total, event.already_done
            self.started = time.monotonic()
        elif isinstance(event, JobFinished):
            record = event.record
            self.done += 1
            self.counts[record["status"]] += 1
            self.counts[record["source"]] += 1
            if record["source"] in ("live", "batch"):
                usage = record.get("usage") or {}
                self.tokens += usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
        elif isinstance(event, Paused):
            self.counts["429 pauses" if "429" in event.reason else "limit pauses"] += 1
            self.waiting = (event.until or time.time() + event.seconds, event.reason)
        elif isinstance(event, Retrying):
            self.counts["retries"] += 1
        elif isinstance(event, OtherModel):  # said even with --quiet: the scores may be another model's
            err_console.print(other_model_line(event.asked, event.answered, event.url), markup=False,
                              highlight=False)
        elif isinstance(event, (RunStopped, BatchSubmitted)) and not self.quiet:
            text = (f"batch {event.batch_id} submitted: {event.requests} requests" if isinstance(event, BatchSubmitted)
                    else f"stopping: {event.reason}")
            err_console.print(text, markup=False, highlight=False)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=self.total or None, completed=self.done, stats=self.stats())


def print_summary(summary, meter=None) -> None:
    table = Table(title="run summary", show_header=False)
    failed = f", {summary.failed} failed" if summary.failed else ""
    table.add_row("jobs", f"{summary.total} ({summary.already_done} done before this run, {summary.remaining} left"
                          f"{failed})")
    had_work = summary.total > summary.already_done
    table.add_row("this run", ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items()))
                  or ("nothing finished" if had_work else "nothing to do"))
    table.add_row("all jobs", ", ".join(f"{k} {v}" for k, v in sorted(summary.final_statuses.items())) or "—")
    table.add_row("sources", ", ".join(f"{k} {v}" for k, v in sorted(summary.sources.items())) or "—")
    table.add_row("HTTP calls", f"{summary.live_requests} (failed attempts: "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(summary.failures.items())) or 'none'})")
    table.add_row("tokens (live)", ", ".join(f"{k} {v:,}" for k, v in sorted(summary.usage.items())) or "0")
    if meter is not None and meter.price is not None:
        table.add_row("spend (live)", f"${summary.spent:,.4f} actual vs ${summary.estimated:,.4f} estimated "
                      f"for the same requests (with their prompt caching)")
    table.add_row("time", f"{summary.elapsed_s:.1f} s")
    for path in summary.csv_paths:
        table.add_row("results", str(path))
    err_console.print(table)
    for pair, count in summary.other_models.items():
        asked, answered = pair.split(" -> ", 1)
        err_console.print(f"warning: {count} answer(s) of this run named model {answered!r}, not {asked!r} (each "
                          f"record's `model` says which)", markup=False, highlight=False)
    if summary.failed:
        causes = ", ".join(f"{cause} x{n}" + (f", e.g. {summary.examples[cause]}" if summary.examples.get(cause) else "")
                           for cause, n in summary.causes.most_common(3))
        err_console.print(f"{summary.failed} job(s) failed ({causes}); rerun with --retry-failed to redo them",
                          markup=False, highlight=False)


def other_model_line(asked: str, answered: str, url: str) -> str:
    return (f"warning: asked for model {asked!r}, {url or 'the server'} answered as {answered!r}: the scores are "
            f"that model's; check --model (and what the server serves)")


def print_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, indent=1, default=str) + "\n")
