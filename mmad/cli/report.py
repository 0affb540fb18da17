"""`mmad report RUN... -o report.html`: the paper's analyses for your runs, as one page or as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmad import config
from mmad.cli.output import console, err_console


def cmd_report(args: argparse.Namespace) -> int:
    from mmad.atomic import atomic_write_text
    from mmad.paths import check_replaceable
    from mmad.report.data import build_report, json_safe
    if args.out:
        check_replaceable(Path(args.out))  # a FIFO or a link there is refused before any work
    if not args.json:
        from mmad.report.figures import require_matplotlib
        require_matplotlib()  # fail before any work when the extra is missing
    data = build_report([Path(p) for p in args.paths], data_root=config.data_root(args.root),
                        masks_dir=Path(args.masks) if args.masks else None, ties=args.ties,
                        prices=args.prices, title=args.title)
    if args.compare and args.bootstrap and data.variants:
        from mmad.report.compare import variant_verdicts
        data.verdicts = variant_verdicts(data.runs, ties=args.ties, n_boot=args.bootstrap, seed=args.seed)
    if args.json:
        text = json.dumps(json_safe(data.as_json()), indent=2, allow_nan=False) + "\n"
        if args.out:
            atomic_write_text(Path(args.out), text)
            console.print(f"wrote {args.out} ({len(text) / 1024:.0f} KiB of JSON, {len(data.runs)} runs)")
        else:
            print(text, end="")
        if data.skipped:
            from mmad.results.files import skipped_note
            err_console.print(f"note: {skipped_note(data.skipped)}", markup=False, highlight=False)
        return 0
    from mmad.report.html import render_html

    page = render_html(data)
    out = Path(args.out or "report.html")
    atomic_write_text(out, page)
    subsets = len({(r.dataset, r.subset) for r in data.records})
    console.print(f"wrote {out} ({len(page.encode()) / 1024:.0f} KiB, {_count(page.count('<img '), 'figure')}): "
                  f"{_count(len(data.runs), 'run')} ({len(data.runs) - len(data.hidden)} ranked), "
                  f"{_count(subsets, 'subset')}, {_count(len(data.table3.datasets), 'dataset')}")
    for line in _gaps(data):
        err_console.print(f"note: {line}", markup=False, highlight=False)
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _gaps(data) -> list[str]:
    """The sections that only say why they are empty, as one line each."""
    lines = []
    from mmad.results.files import skipped_note
    if note := skipped_note(data.skipped):
        lines.append(note)
    if len(data.agreement.ranks) < 3:
        lines.append(f"RQ2 needs 3+ ranked runs (have {len(data.agreement.ranks)})")
    if not data.area.records:
        lines.append("RQ3 skipped: no ground-truth masks found (<subset>/ground_truth/<folder>/<name>_mask.png or --masks)")
    if not data.robustness.groups:
        lines.append("RQ6 skipped: no corrupted runs (run.json settings.corrupt) among the inputs")
    dropped = sum(r.dropped for r in data.records)
    if dropped:
        lines.append(f"{dropped} row(s) without a score were dropped (failed jobs), not imputed")
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    from mmad.cli.options import HelpFormatter, bootstrap_count, nonneg_int, root_help
    rp = sub.add_parser("report", formatter_class=HelpFormatter, help="one self-contained HTML page (or --json) with the paper's analyses "
                                       "(Tables 3-5, Figures 3-4) for your runs")
    rp.add_argument("paths", nargs="+", metavar="RUN", help="run folders, result CSV files, or folders of runs")
    rp.add_argument("-o", "--out", help="output file (default report.html; with --json, standard output)")
    rp.add_argument("--json", action="store_true", help="every analysis as data instead of HTML")
    rp.add_argument("--root", help=root_help("data root, for discovered datasets and masks"))
    rp.add_argument("--masks", metavar="DIR", help="ground-truth masks as DIR/[<dataset>/<subset>/]<folder>/<name>_mask.png")
    rp.add_argument("--ties", choices=("half", "strict"), default="half",
                    help="tied scores across levels: half credit (reference stack, default) or none (paper)")
    rp.add_argument("--prices", help="price file for spend (default $MMAD_PRICES or the packaged prices)")
    rp.add_argument("--title", help="page title")
    rp.add_argument("--no-compare", dest="compare", action="store_false",
                    help="do not run `mmad compare` on runs that are variants of one another")
    rp.add_argument("--bootstrap", type=bootstrap_count, default=1000, help="paired resamples per comparison")
    rp.add_argument("--seed", type=nonneg_int, default=0, help="seed of the comparisons")
    rp.set_defaults(func=cmd_report)
