"""Command line: parse arguments, call the library, print, and choose the exit code.

Only this module prints. Library errors (`MmadError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mmad import config, datasets
from mmad.errors import MmadError

# Wide enough for the metric tables when output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _percent(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _tau(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


# --------------------------------------------------------------------------- data

def cmd_data_list(args: argparse.Namespace) -> int:
    root = config.data_root(args.root)
    present = {(s.dataset, s.subset): s for s in datasets.discover(root)}
    table = Table(title=f"MAD-Bench datasets (data root: {root})")
    for column in ("dataset", "domain", "prompt", "levels", "subsets", "test rows", "present locally"):
        table.add_column(column)
    for spec in datasets.REGISTRY.values():
        here = [s for s in spec.subsets if (spec.name, s) in present]
        table.add_row(spec.name, spec.domain, spec.prompt_family, str(spec.levels),
                      str(len(spec.subsets)), str(spec.rows), f"{len(here)}/{len(spec.subsets)}")
    extra: dict[str, list[datasets.Subset]] = {}
    for (name, _), subset in present.items():
        if name not in datasets.REGISTRY:
            extra.setdefault(name, []).append(subset)
    for name, subsets in sorted(extra.items()):
        rows = sum(len(datasets.read_csv_rows(s.template_path)[1]) for s in subsets)
        table.add_row(name, subsets[0].domain, subsets[0].prompt_family or "(set --prompt-family)",
                      "?", str(len(subsets)), str(rows), f"{len(subsets)}/{len(subsets)} (discovered)")
    console.print(table)
    if args.verbose:
        for (name, subset), item in sorted(present.items()):
            console.print(f"  {item.label}: {item.template_path}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mmad.synth import synthesize

    root = config.data_root(args.root)
    templates = synthesize(root, train=args.train, per_level=args.per_level, size=args.size, seed=args.seed)
    console.print(f"wrote demo dataset 'synth' ({len(templates)} subsets) under {root}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mmad.fetch import load_records, write_records

    root = config.data_root(args.root)
    written, skipped = write_records(load_records(args.source), root)
    console.print(f"{written} images written, {skipped} already present, under {root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    root = config.data_root(args.root)
    for subset in datasets.resolve(root, args.dataset, args.subset):
        template = datasets.load_subset(subset)
        refs = datasets.reference_images(subset, args.refs)
        console.print(f"{subset.label}: {len(template)} rows, levels "
                      f"{sorted(set(template.levels.tolist()))}, references {[r.name for r in refs]}")
    return 0


# --------------------------------------------------------------------------- eval

def cmd_eval(args: argparse.Namespace) -> int:
    from mmad.analysis import dataset_means, evaluate_paths

    records = evaluate_paths([Path(p) for p in args.paths], data_root=config.data_root(args.root), ties=args.ties,
                             normal_up_to=args.normal_up_to, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return 0
    levels = sorted({level for r in records for level in r.auroc_by_level})
    header = ["dataset", "subset", "n", "dropped", "AUC %", "Ken", "C %"] + [f"AUC L{lv} %" for lv in levels]
    rows = [[r.dataset, r.subset, str(r.n), str(r.dropped), _percent(r.auroc), _tau(r.kendall_tau_b),
             _percent(r.c_index)] + [_percent(r.auroc_by_level.get(lv, math.nan)) for lv in levels]
            for r in records]
    means = [[m.dataset, f"mean of {m.subsets}", "", "", _percent(m.auroc), _tau(m.kendall_tau_b),
              _percent(m.c_index)] + [""] * len(levels) for m in dataset_means(records)]
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows + means)
        print(buffer.getvalue(), end="")
    elif args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows + means:
            print("| " + " | ".join(row) + " |")
    else:
        table = Table(title=f"Multilevel AD performance (ties: {args.ties})")
        for column in header:
            table.add_column(column, justify="left" if column in ("dataset", "subset") else "right")
        for row in rows:
            table.add_row(*row)
        table.add_section()
        for row in means:
            table.add_row(*row, style="bold")
        console.print(table)
    dropped = sum(r.dropped for r in records)
    if dropped:
        err_console.print(f"note: {dropped} row(s) without a score were dropped (failed jobs), not imputed")
    return 0


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmad", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: list, fetch, synth, check")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, func, text in (("list", cmd_data_list, "known datasets and what is present locally"),
                             ("fetch", cmd_data_fetch, "download the published dataset into the layout"),
                             ("synth", cmd_data_synth, "write the offline demo dataset"),
                             ("check", cmd_data_check, "validate a dataset's templates and images")):
        p = data_sub.add_parser(name, help=text)
        p.add_argument("--root", help=f"data root (default ${config.DATA_ROOT_ENV} or ./data)")
        p.set_defaults(func=func)
        if name == "list":
            p.add_argument("-v", "--verbose", action="store_true")
        if name == "fetch":
            p.add_argument("--source", default="tricao1105/MultilevelADSet",
                           help="hub dataset id or a local folder saved with save_to_disk")
        if name == "synth":
            p.add_argument("--train", type=int, default=20, help="normal training images per subset")
            p.add_argument("--per-level", type=int, default=10, help="test images per level")
            p.add_argument("--size", type=int, default=224, help="image side in pixels")
            p.add_argument("--seed", type=int, default=0)
        if name == "check":
            p.add_argument("--dataset", required=True)
            p.add_argument("--subset")
            p.add_argument("--refs", type=int, default=3)

    ev = sub.add_parser("eval", help="metrics for result files (ours or the reference code's)")
    ev.add_argument("paths", nargs="+", help="result CSV files or folders")
    fmt = ev.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--json", action="store_true")
    ev.add_argument("--ties", choices=("half", "strict"), default="half",
                    help="tied scores across levels: half credit (reference stack, default) or none (paper)")
    ev.add_argument("--normal-up-to", type=int, default=0, metavar="K",
                    help="treat severity levels <= K as normal")
    ev.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="add seeded bootstrap 95%% intervals from N resamples (--json)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--root", help="data root whose discovered datasets are recognised in file names")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MmadError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
