"""`mmad compare` and `mmad noise`: parse, call mmad.comparison, print tables."""

from __future__ import annotations

import argparse
import glob
import json
import math
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from mmad.cli.options import HelpFormatter
from mmad.cli.output import console, err_console, percent, tau
from mmad.comparison.noise import scope_name
from mmad.comparison.verdicts import METRIC_NAMES, format_difference, format_p
from mmad.errors import ConfigError
from mmad.metrics.stats import METRICS

MIN_RESAMPLES = 100


def register(sub) -> None:
    """Add the two commands to the `mmad` subparsers."""
    cp = sub.add_parser("compare", formatter_class=HelpFormatter, help="is a difference between runs real? paired bootstrap, rank tests, Holm")
    cp.add_argument("base", help="the reference run: a run folder or a result CSV")
    cp.add_argument("others", nargs="+", metavar="other", help="runs compared with the base, each on its own")
    cp.add_argument("--ties", choices=("half", "strict"), default="half",
                    help="tied scores across levels: half credit (reference stack, default) or none (paper)")
    cp.add_argument("--bootstrap", type=_resamples, default=2000, metavar="N",
                    help=f"resamples of the paired bootstrap (default 2000, at least {MIN_RESAMPLES})")
    cp.add_argument("--seed", type=_non_negative, default=0, help="seed of the bootstrap")
    cp.add_argument("--noise", nargs="+", default=[], metavar="RUN",
                    help="repeat folders of the base and/or the others (same settings, another settings.repeat); "
                         "give it after the runs (default: none)")
    fmt = cp.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="tables as Markdown")
    fmt.add_argument("--json", action="store_true", help="the comparison as JSON")
    cp.set_defaults(func=cmd_compare)

    nz = sub.add_parser("noise", formatter_class=HelpFormatter, help="run-to-run noise between repeats of one run (item and metric spread)")
    nz.add_argument("runs", nargs="+", metavar="RUN", help="two or more repeat folders of the same settings")
    nz.add_argument("--ties", choices=("half", "strict"), default="half",
                    help="tied scores across levels: half credit (reference stack) or none (paper)")
    nz_fmt = nz.add_mutually_exclusive_group()
    nz_fmt.add_argument("--markdown", action="store_true", help="tables as Markdown")
    nz_fmt.add_argument("--json", action="store_true", help="the noise per run as JSON")
    nz.set_defaults(func=cmd_noise)


def _resamples(text: str) -> int:
    value = _integer(text)
    if value < MIN_RESAMPLES:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_RESAMPLES}, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


# --------------------------------------------------------------------------- compare

def repeats_beside(folders: list[Path]) -> list[Path]:
    """Repeat folders (`<run>+r1`, `<run>+r2`, ...) found beside the compared run folders."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found.extend(sorted(p for p in folder.parent.glob(f"{glob.escape(folder.name)}+r*")
                                if p.is_dir() and p.name[len(folder.name) + 2:].isdigit()))
    return found


def cmd_compare(args: argparse.Namespace) -> int:
    from mmad import api
    from mmad.results.runinfo import read_run_info

    info = read_run_info(Path(args.base))
    if info is not None and info.get("settings", {}).get("task") == "qa":  # MMAD-QA runs pair by question
        from mmad.cli.qa import cmd_qa_compare
        if len(args.others) != 1:
            raise ConfigError("QA runs are compared two at a time: mmad compare BASE OTHER")
        return cmd_qa_compare(argparse.Namespace(base=args.base, other=args.others[0], markdown=args.markdown,
                                                 json=args.json, csv=False, bootstrap=args.bootstrap,
                                                 seed=args.seed))

    noise = [Path(p) for p in args.noise]
    if not noise:  # repeats made with --repeats sit beside their run: use them
        noise = repeats_beside([Path(args.base)] + [Path(p) for p in args.others])
        if noise:
            err_console.print(f"note: run-to-run noise from the repeats beside the runs: "
                              f"{', '.join(p.name for p in noise)}", markup=False, highlight=False)
    report = api.compare(args.base, *args.others, ties=args.ties, n_boot=args.bootstrap, seed=args.seed, noise=noise)
    if args.json:
        print(json.dumps(report_json(report), indent=2))
        return 0
    for comparison in report.comparisons:
        title = (f"{comparison.other} vs {comparison.base} (ties: {report.ties}, {report.n_boot:,} paired "
                 f"resamples, seed {report.seed}; Holm over {comparison.family} tests)")
        _emit(args.markdown, f"Per subset: {title}", *subset_rows(comparison), group=2)
        _emit(args.markdown, f"Dataset and overall means: {title}", *pooled_rows(comparison), group=1)
        for line in comparison.verdicts:
            _say(args.markdown, line)
        for line in dropped_lines(comparison):
            _say(args.markdown, line)
        if not comparison.noise_measured:
            _say(args.markdown, "note: run-to-run noise not measured (one run each). Hosted models are not "
                                "deterministic at temperature 0; repeat runs and pass them with --noise.")
    _emit(args.markdown, "Runs", *run_rows(report.runs))
    return 0


def _emit(markdown: bool, title: str, header: list[str], rows: list[list[str]], group: int = 0) -> None:
    """A table: rich in the terminal (a rule where the first `group` columns change), or markdown."""
    if markdown:
        print(f"\n**{title}**\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()
        return
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in ("dataset", "subset", "scope", "metric", "run") else "right")
    for i, row in enumerate(rows):
        if i and group and row[:group] != rows[i - 1][:group]:
            table.add_section()
        table.add_row(*row)
    console.print(table)


def _say(markdown: bool, line: str) -> None:
    if markdown:
        print(f"- {line}")
    else:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _value(metric: str, value: float) -> str:
    return tau(value) if metric == "kendall_tau_b" else percent(value)


def _diff(metric: str, r) -> str:
    return (f"{format_difference(metric, r.diff, digits=2)} [{format_difference(metric, r.low, digits=2)}, "
            f"{format_difference(metric, r.high, digits=2)}]")


SHORT = {"auroc": "AUC", "c_index": "C", "kendall_tau_b": "tau"}


def subset_rows(comparison) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "subset", "n", "metric", "base", "other", "Δ [95% CI]", "p", "p Holm", "noise band"]
    rows = []
    for result in comparison.subsets:
        for metric, r in result.metrics.items():
            rows.append([result.scope[1], result.scope[2], str(result.items), METRIC_NAMES[metric],
                         _value(metric, r.base), _value(metric, r.other), _diff(metric, r), format_p(r.bootstrap.p),
                         format_p(r.bootstrap.p_holm), _band(metric, r)])
    return header, rows


def _band(metric: str, r) -> str:
    if r.noise is None:
        return "—"
    mark = "exceeded" if r.noise.exceeded_by(r.diff) else "within"
    return f"±{format_difference(metric, r.noise.band, signed=False, digits=2)} {mark}"


def pooled_rows(comparison) -> tuple[list[str], list[list[str]]]:
    header = ["scope", "metric", "subsets", "base", "other", "Δ [95% CI]", "p", "p Holm", "Wilcoxon p Holm",
              "sign p Holm", "W/T/L", "noise band"]
    rows = []
    for result in comparison.pooled:
        for metric, r in result.metrics.items():
            sign = r.sign
            rows.append([scope_name(result.scope), METRIC_NAMES[metric], str(result.subsets), _value(metric, r.base),
                         _value(metric, r.other), _diff(metric, r), format_p(r.bootstrap.p),
                         format_p(r.bootstrap.p_holm),
                         format_p(r.wilcoxon.p_holm) if r.wilcoxon else "—",
                         format_p(r.sign_test.p_holm) if r.sign_test else "—",
                         f"{sign.wins}/{sign.ties}/{sign.losses}" if sign else "—", _band(metric, r)])
    return header, rows


def dropped_lines(comparison) -> list[str]:
    lines = []
    for label, reasons in comparison.dropped.items():
        text = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        lines.append(f"dropped from {label}: {text}")
    for label, subsets in comparison.unpaired_subsets.items():
        lines.append(f"only in {label}: {', '.join(subsets)}")
    if comparison.empty_subsets:
        lines.append(f"no item scored in both runs: {', '.join(comparison.empty_subsets)}")
    return lines


def run_rows(runs) -> tuple[list[str], list[list[str]]]:
    header = ["run", "items", "failed", "statuses", "input tokens", "output tokens", "cached input", "$",
              "median latency s"]
    rows = []
    for run in runs:
        statuses = ", ".join(f"{name} {count}" for name, count in sorted(run.statuses.items()))
        cost = f"{run.cost_usd:.4f}" if run.cost_usd is not None else f"— ({run.cost_note})"
        rows.append([run.label, str(run.items), _share(run.failure_rate), statuses,
                     *(f"{run.tokens[k]:,}" if run.tokens else "—"
                       for k in ("input_tokens", "output_tokens", "cached_input_tokens")), cost,
                     "—" if run.median_latency_s is None else f"{run.median_latency_s:.2f}"])
    return header, rows


def _share(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"


def report_json(report) -> dict:
    from mmad.comparison.compare import HOLM_FAMILY, INTERVAL_METHOD, P_METHOD
    return {"ties": report.ties, "bootstrap": report.n_boot, "seed": report.seed, "interval": INTERVAL_METHOD,
            "p_value": P_METHOD, "holm_family": HOLM_FAMILY, "runs": [r.as_json() for r in report.runs],
            "comparisons": [c.as_json() for c in report.comparisons],
            "noise": [g.as_json() for g in report.noise]}


# --------------------------------------------------------------------------- noise

def cmd_noise(args: argparse.Namespace) -> int:
    from mmad.comparison.noise import noise_report
    folders = [Path(p) for p in args.runs]
    beside = [p for p in repeats_beside(folders) if p.resolve() not in {f.resolve() for f in folders}]
    if beside:  # `mmad noise results/gpt-4o` reads its `+r1`, `+r2` ... repeats too, as compare does
        err_console.print(f"note: with the repeats beside it: {', '.join(str(p) for p in beside)}", markup=False,
                          highlight=False)
        folders += beside
    if len(folders) < 2:
        raise ConfigError(f"mmad noise needs at least 2 runs (repeats of the same settings; `--repeats N` on "
                          f"score makes them as <run>+r1 ...); got {len(folders)}")
    groups = noise_report(folders, ties=args.ties)
    if args.json:
        print(json.dumps([g.as_json() for g in groups], indent=2))
        return 0
    for group in groups:
        repeats = ", ".join(f"{label} (repeat {index})" for label, index in zip(group.runs, group.repeats))
        _emit(args.markdown, f"Run-to-run noise of {group.label}: {repeats}. Item scores: SD and range "
                             f"across repeats; AUC and C in points", *noise_rows(group))
    err_console.print("note: each metric SD comes from as many values as there are repeats (df = repeats - 1)")
    return 0


def noise_rows(group) -> tuple[list[str], list[list[str]]]:
    header = ["scope", "items", "dropped", "changed", "mean SD", "median SD", "max range"] + \
             [f"{SHORT[m]} SD" for m in METRICS] + [f"{SHORT[m]} range" for m in METRICS]
    rows = []
    for scope, item in group.scope_items():
        spreads = group.metrics[scope]
        rows.append([_scope(scope), str(item.items), str(item.dropped), _share(item.changed / item.items if item.items
                                                                              else math.nan),
                     _number(item.mean_sd), _number(item.median_sd), _number(item.max_range)]
                    + [format_difference(m, spreads[m].sd, signed=False, digits=2) for m in METRICS]
                    + [format_difference(m, spreads[m].range, signed=False, digits=2) for m in METRICS])
    return header, rows


def _scope(scope: Sequence) -> str:
    return scope_name(tuple(scope))


def _number(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3g}"
