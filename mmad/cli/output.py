"""The CLI's output: the consoles (wide enough for tables when piped) and number formats."""

from __future__ import annotations

import math
import sys

from rich.console import Console


class _Console(Console):
    """rich exits 1 when the reader of a pipe leaves; mmad's rule for that (cli.main) is one exit
    code, 141, for every command, so the error goes up to it."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError()


# Wide enough for the metric tables when output goes to a file or a pipe.
console = _Console(width=None if sys.stdout.isatty() else 160)
err_console = _Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def percent(value: float) -> str:
    """A metric in [0, 1] as the paper prints it (x100, 2 decimals); NaN as a dash."""
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def tau(value: float) -> str:
    """Kendall tau-b with 3 decimals; NaN as a dash."""
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def print_rows(title: str, header: list[str], rows: list[list[str]], totals: list[list[str]], *,
               markdown: bool) -> None:
    """A results table: rows, then total/mean rows in bold (a section apart), or as markdown."""
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows + totals:
            print("| " + " | ".join(row) + " |")
        return
    from rich.table import Table
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in ("run", "dataset", "subset") else "right")
    for row in rows:
        table.add_row(*row)
    table.add_section()
    for row in totals:
        table.add_row(*row, style="bold")
    console.print(table)
