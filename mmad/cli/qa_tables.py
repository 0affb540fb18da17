"""How MMAD-QA numbers are printed: the published table (rows: datasets then their mean;
columns: the seven subtasks, Average, Overkill, Miss) and the paired comparison.
Terminal and Markdown show percentages; CSV shows numbers in [0, 1]; JSON both as numbers."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence

from rich.table import Table

from mmad.cli.output import console, err_console
from mmad.qa.compare import QAComparison
from mmad.qa.metrics import DETECTION, SUMMARY_KEYS, DatasetScore

SHORT = {"Anomaly Detection": "Anomaly\nDetect.", "Defect Classification": "Defect\nClassif.",
         "Defect Localization": "Defect\nLocaliz.", "Defect Description": "Defect\nDescr.",
         "Defect Analysis": "Defect\nAnalysis", "Object Classification": "Object\nClassif.",
         "Object Analysis": "Object\nAnalysis"}


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _cell(score: DatasetScore, key: str, newline: str) -> str:
    text = _pct(score.cells.get(key, math.nan))
    low, high = score.ci.get(key, (math.nan, math.nan))
    return text if math.isnan(low) else f"{text}{newline}[{100 * low:.2f}, {100 * high:.2f}]"


def _number(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def print_scores(columns: Sequence[str], results: Mapping[str, list[DatasetScore]], *, fmt: str,
                 bootstrap: int = 0) -> None:
    """fmt: terminal | markdown | csv | json."""
    if fmt == "json":
        print(json.dumps({"columns": list(columns), "runs": {run: [s.as_json(columns) for s in rows]
                                                              for run, rows in results.items()}}, indent=2))
        return
    keys = (*columns, *SUMMARY_KEYS)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        names = [k.lower().replace(" ", "_") for k in keys]
        header = ["run", "dataset", "images", "questions", "answered", "failed", "pending", *names,
                  "normal_accuracy", "anomaly_accuracy"]
        if bootstrap:
            header += [f"{n}_{side}" for n in names for side in ("low", "high")]
        writer.writerow(header)
        for run, rows in results.items():
            for s in rows:
                line = [run, s.dataset, s.images, s.questions, sum(s.answered.values()), sum(s.failed.values()),
                        s.pending, *(_number(s.cells.get(k)) for k in keys),
                        _number(s.cells.get("Normal accuracy")), _number(s.cells.get("Anomaly accuracy"))]
                if bootstrap:
                    line += [_number(s.ci.get(k, (math.nan, math.nan))[i]) for k in keys for i in (0, 1)]
                writer.writerow(line)
        print(buffer.getvalue(), end="")
        return
    header = ["dataset", *keys, "answered", "failed"]
    for run, rows in results.items():
        if fmt == "markdown":
            print(f"**{run}** (accuracy %; Anomaly Detection balanced)\n")
            print("| " + " | ".join(header) + " |")
            print("|---|" + "---:|" * (len(header) - 1))
            for s in rows:
                name = f"**{s.dataset}**" if s is rows[-1] else s.dataset
                print("| " + " | ".join([name, *(_cell(s, k, " ") for k in keys), str(sum(s.answered.values())),
                                         str(sum(s.failed.values()))]) + " |")
            print()
            continue
        title = f"MMAD-QA accuracy (%): {run}"
        if bootstrap:
            title += f"; [95% bootstrap interval, {bootstrap} image resamples]"
        table = Table(title=title)
        for column in header:
            label = SHORT.get(column, column) + ("\n(bal.)" if column == DETECTION else "")
            table.add_column(label, justify="left" if column == "dataset" else "right", no_wrap=column == "dataset")
        for s in rows:
            if s is rows[-1]:
                table.add_section()
            table.add_row(s.dataset, *(_cell(s, k, "\n") for k in keys), str(sum(s.answered.values())),
                          str(sum(s.failed.values())), style="bold" if s is rows[-1] else None)
        console.print(table)


def print_failure_notes(results: Mapping[str, list[DatasetScore]]) -> None:
    """Say what was left out: failed answers and questions not answered yet, per run."""
    for run, rows in results.items():
        total = rows[-1]
        failed: Counter = total.failed
        if failed:
            parts = ", ".join(f"{kind} {n}" for kind, n in sorted(failed.items()))
            err_console.print(f"note: {run}: {sum(failed.values())} failed answer(s) ({parts}) are left out of every "
                              f"accuracy and counted here; none is scored as wrong", markup=False, highlight=False)
        if total.pending:
            err_console.print(f"note: {run}: {total.pending} question(s) not answered yet (an unfinished run); "
                              f"left out", markup=False, highlight=False)
        undefined = [s.dataset for s in rows[:-1] if math.isnan(s.cells.get(DETECTION, 0.0))]
        if undefined:
            err_console.print(f"note: {run}: balanced Anomaly Detection is undefined (—) for {', '.join(undefined)}: "
                              f"no answered normal or no answered anomalous image", markup=False, highlight=False)


def print_comparison(result: QAComparison, *, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(result.as_json(), indent=2))
        return
    header = ["subtask", "n", result.base, result.other, "diff", "95% CI", "base only right", "other only right",
              "McNemar p"]
    lines: list[list[str]] = []  # the shown cells (markdown, table)
    values: list[list[object]] = []  # the csv's raw values
    for r in result.rows:
        ci = r.ci or (math.nan, math.nan)
        if fmt == "csv":
            values.append([r.label, r.n, _number(r.base), _number(r.other), _number(r.diff), _number(ci[0]),
                          _number(ci[1]), r.base_only, r.other_only, _number(r.p_value)])
        else:
            interval = "" if math.isnan(ci[0]) else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
            p = "" if r.p_value is None else (f"{r.p_value:.3g}" if r.p_value >= 1e-4 else f"{r.p_value:.1e}")
            lines.append([r.label, str(r.n), _pct(r.base), _pct(r.other), f"{100 * r.diff:+.2f}", interval,
                          str(r.base_only) if r.p_value is not None else "",
                          str(r.other_only) if r.p_value is not None else "", p])
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["subtask", "n", "base", "other", "diff", "ci_low", "ci_high", "base_only_right",
                         "other_only_right", "p_mcnemar"])
        writer.writerows(values)
        print(buffer.getvalue(), end="")
    elif fmt == "markdown":
        print("| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        table = Table(title=f"MMAD-QA paired comparison (accuracy %, diff = other - base in points; "
                            f"{result.bootstrap} paired image resamples)")
        for column in header:
            table.add_column(column, justify="left" if column == "subtask" else "right")
        for index, line in enumerate(lines):
            if index == len(lines) - 2:
                table.add_section()
            table.add_row(*line)
        console.print(table)
    err_console.print(f"paired: {result.paired} question(s) answered in both runs; left out: {result.failed} failed "
                      f"in either run, {result.only_base} only in {result.base}, {result.only_other} only in "
                      f"{result.other}", markup=False, highlight=False)
