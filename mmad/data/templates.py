"""Template CSVs, the benchmark's one table format: `Path,Severity[,Anomaly Score]`.

A template lists a subset's test images and their severities; a result file is the same table
with the score column filled. Both column conventions are read (`Path,Severity,Anomaly Score` as
shipped, `image_path_raw,severity,anomaly_score` as on the dataset card); quoted paths with
commas stay whole; fractional severities keep their raw value.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmad.atomic import atomic_write_text
from mmad.errors import DataError
from mmad.metrics.core import severity_levels
from mmad.reading import read_bytes

PATH_COLUMNS = ("path", "image_path_raw")


SEVERITY_COLUMNS = ("severity", "area")


SCORE_COLUMNS = ("anomaly score", "anomaly_score", "score")


@dataclass(frozen=True)
class Template:
    """Test rows of one subset: relative paths, raw severities, and levels (severity rounded up)."""

    source: Path
    paths: tuple[str, ...]
    severity: np.ndarray  # float, as written

    @property
    def levels(self) -> np.ndarray:
        return severity_levels(self.severity)

    def __len__(self) -> int:
        return len(self.paths)


def find_column(header: list[str], accepted: tuple[str, ...], source: Path, what: str) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in accepted:
        if name in lowered:
            return lowered.index(name)
    raise DataError(f"{source}: no {what} column; expected one of {', '.join(accepted)} "
                    f"(header: {','.join(header)})")


def read_csv_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and each row's line in the file (blank lines skipped), quoted commas honoured.
    A row with more fields than the header is refused: a stray comma or an unquoted path would
    otherwise shift or drop a value silently."""
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        raw = read_bytes(path)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise DataError(f"{path}: line {line} is not UTF-8 text (byte {raw[exc.start]:#04x}); save the file "
                            f"as UTF-8") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = row
            else:
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: {exc}") from None
    if header is None:
        raise DataError(f"{path}: empty file (no header)")
    wide = [line for row, line in zip(rows, lines) if len(row) > len(header)]
    if wide:
        raise DataError(f"{path}: more fields than the header's {len(header)} at line(s) {first_rows(wide)} "
                        f"(a stray comma, or a path with a comma that is not quoted?)")
    return header, rows, lines


def parse_number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# Severity levels are small whole numbers (MAD-Bench's go up to 6; fractional ones are rounded up).
# Anything beyond this is a typo or another column, and would overflow the level arithmetic.
MAX_SEVERITY = 1000.0


def parse_severity(cell: str) -> float | None:
    """A severity cell: a finite number from 0 to MAX_SEVERITY, else None."""
    value = parse_number(cell)
    return value if value is not None and 0 <= value <= MAX_SEVERITY else None


def _row_problem(cell: str, value: float | None) -> str:
    """What is wrong with one template row, in words (the first bad row's message)."""
    if value is not None:
        return "no image path"
    if not cell:
        return "no severity"
    try:
        number = float(cell)
    except ValueError:
        return f"severity {cell[:40]!r} is non-numeric"
    if not math.isfinite(number):
        return f"severity {cell!r} is infinite or not a number"
    return f"severity {cell!r} is " + ("negative" if number < 0 else f"above {MAX_SEVERITY:g}")


def first_rows(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")


def read_template(path: Path) -> Template:
    """Read a template in either column convention; reject empty, non-numeric and duplicate rows.

    Row numbers in messages are file lines (header = line 1).
    """
    header, rows, lines = read_csv_rows(path)
    path_col = find_column(header, PATH_COLUMNS, path, "path")
    sev_col = find_column(header, SEVERITY_COLUMNS, path, "severity")
    if not rows:
        raise DataError(f"{path}: template has a header but no rows")
    paths: list[str] = []
    path_lines: list[int] = []
    severities: list[float] = []
    bad: list[int] = []
    first_problem = ""
    for line, row in zip(lines, rows):
        cell = row[sev_col].strip() if sev_col < len(row) else ""
        value = parse_severity(cell)
        if value is None or path_col >= len(row) or not row[path_col].strip():
            bad.append(line)
            first_problem = first_problem or _row_problem(cell, value)
            continue
        paths.append(row[path_col].strip())
        path_lines.append(line)
        severities.append(value)
    if bad:
        raise DataError(f"{path}: line {bad[0]}: {first_problem}; rows without an image path or a severity from 0 "
                        f"to {MAX_SEVERITY:g} at line(s) {first_rows(bad)}")
    counts = Counter(paths)
    dupes = [line for line, p in zip(path_lines, paths) if counts[p] > 1]
    if dupes:
        example = next(p for p in paths if counts[p] > 1)
        raise DataError(f"{path}: duplicate paths at line(s) {first_rows(dupes)} (e.g. {example!r})")
    return Template(path, tuple(paths), np.asarray(severities, dtype=float))


RESULT_HEADER = ("Path", "Severity", "Anomaly Score")


def format_score(score: float | None) -> str:
    if score is None or not np.isfinite(score):
        return ""
    return str(int(score)) if float(score).is_integer() else repr(float(score))


def format_severity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_result_csv(path: Path, rows: Iterable[tuple[str, float, float | None]]) -> None:
    """`Path,Severity,Anomaly Score` in template order; failed rows keep an empty score."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_HEADER)
    for rel, severity, score in rows:
        writer.writerow((rel, format_severity(severity), format_score(score)))
    atomic_write_text(path, buffer.getvalue())
