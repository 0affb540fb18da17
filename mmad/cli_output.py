"""The CLI's output: the consoles (wide enough for tables when piped) and number formats."""

from __future__ import annotations

import math
import sys

from rich.console import Console

# Wide enough for the metric tables when output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def percent(value: float) -> str:
    """A metric in [0, 1] as the paper prints it (x100, 2 decimals); NaN as a dash."""
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def tau(value: float) -> str:
    """Kendall tau-b with 3 decimals; NaN as a dash."""
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"
