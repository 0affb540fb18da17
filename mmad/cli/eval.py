"""`mmad eval` (metrics for result files) and `mmad export` (files the reference script reads)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

from rich.table import Table

from mmad import config
from mmad.cli.classify import add_eval_options as add_classify_eval_options
from mmad.cli.options import HelpFormatter, bootstrap_count, nonneg_int
from mmad.cli.output import console, err_console, percent, print_rows, tau
from mmad.errors import ConfigError, DataError


def _interval(record, key: str, scale: float) -> str:
    low, high = record.ci.get(key, (math.nan, math.nan))
    if math.isnan(low):
        return ""
    return f" [{low * scale:.2f}, {high * scale:.2f}]" if scale == 100 else f" [{low:.3f}, {high:.3f}]"


def cmd_eval(args: argparse.Namespace) -> int:
    if args.task == "qa":
        from mmad.cli.qa import eval_qa
        return eval_qa(args)
    if args.task == "classify":
        from mmad.cli.classify import eval_classify
        return eval_classify(args)
    return eval_scores(args)


def eval_scores(args: argparse.Namespace) -> int:
    from mmad import api
    from mmad.analysis.evaluate import dataset_means

    if (args.dataset is None) != (args.subset is None):
        raise ConfigError("--dataset and --subset go together (they name the data of one result file)")
    if args.dataset is not None:
        check_dataset_label(args.dataset, args.subset, config.data_root(args.root))
    skipped: list[Path] = []
    records = api.evaluate(*args.paths, data_root=args.root, ties=args.ties, normal_up_to=args.normal_up_to,
                           bootstrap=args.bootstrap, seed=args.seed, dataset=args.dataset, subset=args.subset,
                           skipped=skipped)
    if args.agreement and len({r.run for r in records}) < 3:  # before any table: the request cannot be met
        raise ConfigError(f"--agreement needs at least 3 runs to rank; found {len({r.run for r in records})}")
    from mmad.results.files import skipped_note
    if skipped:
        err_console.print(f"note: {skipped_note(skipped)}", markup=False, highlight=False)
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return 0
    levels = sorted({level for r in records for level in r.auroc_by_level})
    # Several runs (models, prompt variants, methods) side by side: rows sorted by subset, then run.
    records = sorted(records, key=lambda r: (r.dataset, r.subset, r.run))
    means = sorted(dataset_means(records), key=lambda m: (m.dataset, m.run))
    header = ["run", "dataset", "subset", "n", "dropped", "AUC %", "Ken", "C %"] + [f"AUC L{lv} %" for lv in levels]
    if args.csv:  # numbers, not formatted text: metrics in [0, 1] / [-1, 1], empty when undefined
        header = ["run", "dataset", "subset", "n", "dropped", "auroc", "kendall_tau_b", "c_index"] + \
                 [f"auroc_level_{lv}" for lv in levels]
        if args.bootstrap:
            header += [f"{k}_{side}" for k in ("auroc", "kendall_tau_b", "c_index") for side in ("low", "high")]

        def number(value) -> str:
            return "" if value is None or math.isnan(value) else repr(float(value))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for r in records:
            row = [r.run, r.dataset, r.subset, r.n, r.dropped, number(r.auroc), number(r.kendall_tau_b),
                   number(r.c_index)] + [number(r.auroc_by_level.get(lv, math.nan)) for lv in levels]
            if args.bootstrap:
                row += [number(r.ci.get(k, (math.nan, math.nan))[i]) for k in ("auroc", "kendall_tau_b", "c_index")
                        for i in (0, 1)]
            writer.writerow(row)
        for m in means:
            writer.writerow([m.run, m.dataset, f"mean of {m.subsets}", "", "", number(m.auroc),
                             number(m.kendall_tau_b), number(m.c_index)] + [""] * (len(header) - 8))
        print(buffer.getvalue(), end="")
    else:
        rows = [[r.run, r.dataset, r.subset, str(r.n), str(r.dropped),
                 percent(r.auroc) + _interval(r, "auroc", 100), tau(r.kendall_tau_b) + _interval(r, "kendall_tau_b", 1),
                 percent(r.c_index) + _interval(r, "c_index", 100)]
                + [percent(r.auroc_by_level.get(lv, math.nan)) for lv in levels] for r in records]
        mean_rows = [[m.run, m.dataset, f"mean of {m.subsets}", "", "", percent(m.auroc), tau(m.kendall_tau_b),
                      percent(m.c_index)] + [""] * len(levels) for m in means]
        title = f"Multilevel AD performance (ties: {args.ties})"
        if args.bootstrap:
            title += f"; [95% BCa bootstrap interval, {args.bootstrap} resamples, n - 1 per level]"
        print_rows(title, header, rows, mean_rows, markdown=args.markdown)
    notes = [(r, note) for r in records for note in r.notes]
    for record, note in notes:
        err_console.print(f"— {record.run} {record.dataset}/{record.subset}: {note}", markup=False, highlight=False)
    undefined_levels = [(r, lv) for r in records for lv in levels if lv not in r.auroc_by_level]
    if undefined_levels and not args.json:
        err_console.print("— in an AUC L<k> column: that subset has no rows of level k", markup=False)
    if args.agreement:
        _print_agreement(records)
    from mmad.cli.hybrid import print_gate_notes  # hybrid runs: rows decided by the detector gate
    print_gate_notes(records)
    dropped = sum(r.dropped for r in records)
    if dropped:
        err_console.print(f"note: {dropped} row(s) without a score were dropped (failed jobs), not imputed")
    return 0


def check_dataset_label(dataset: str, subset: str, data_root: Path) -> None:
    """--dataset/--subset label a file's rows. A known dataset's subset must be one of its own (a
    typo would file the rows under a name nothing else matches); a name mmad does not know is a
    dataset of the user's own, accepted with a note."""
    from mmad.data.datasets import discover
    from mmad.results.files import known_pairs
    pairs = known_pairs((s.dataset, s.subset) for s in discover(data_root))
    subsets = sorted(s for d, s in pairs if d == dataset)
    if not subsets:
        err_console.print(f"note: {dataset!r} is not a known or discovered dataset: the rows are labelled "
                          f"{dataset}/{subset} as given", markup=False, highlight=False)
    elif subset not in subsets:
        shown = ", ".join(subsets[:12]) + (", ..." if len(subsets) > 12 else "")
        raise ConfigError(f"--subset {subset!r} is not a subset of {dataset} ({shown})")


def _print_agreement(records) -> None:
    """Do the metrics rank the runs alike? Spearman correlation of the run rankings they induce,
    over the subsets every run has."""
    from mmad.analysis.evaluate import common_subsets, ranking_agreement, run_means
    shared, left_out = common_subsets(records)
    if left_out:
        err_console.print(f"note: ranking on the {len({(r.dataset, r.subset) for r in shared})} subset(s) every run "
                          f"has; left out: {', '.join(left_out)}", markup=False)
    if not shared:
        raise ConfigError("--agreement: the runs have no subset in common")
    means = run_means(shared)
    if len(means) < 3:
        raise ConfigError(f"--agreement needs at least 3 runs to rank; found {len(means)}")
    names, matrix = ranking_agreement(means)
    table = Table(title=f"Spearman correlation of the rankings of {len(means)} runs (mean over subsets)")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for name, row in zip(names, matrix):
        table.add_row(name, *(f"{value:.3f}" for value in row))
    console.print(table)


def cmd_export(args: argparse.Namespace) -> int:
    """CSV files the reference `get_performance.py` reads unchanged: `Path,Severity,Anomaly Score`,
    failed rows dropped (and counted on stderr), the multidog `Area` and PatchCore `Score`
    columns renamed."""
    from mmad.atomic import atomic_write_text
    from mmad.data.templates import format_score, format_severity
    from mmad.results.files import find_result_files, read_result_file
    if not args.reference_format:
        raise ConfigError("mmad export needs a format: --reference-format")
    for source in [Path(p) for p in args.runs]:
        files = find_result_files([source])
        target = Path(args.out) / source.name if args.out else source.with_name(source.name + "-reference")
        if source.is_file():
            target = Path(args.out) if args.out else source.parent.with_name(source.parent.name + "-reference")
        if target.resolve() == (source if source.is_dir() else source.parent).resolve():
            raise ConfigError(f"--out {target} is the run's own folder; export writes beside it")
        dropped_total = 0
        for path in files:
            table = read_result_file(path, dataset="export", subset="export")
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(("Path", "Severity", "Anomaly Score"))
            dropped = 0
            for rel, severity, score in zip(table.paths, table.severity, table.scores):
                if math.isnan(score):
                    dropped += 1
                    continue
                writer.writerow((rel, format_severity(severity), format_score(score)))
            if dropped == len(table.paths):
                raise DataError(f"{path}: every row failed; nothing to export")
            atomic_write_text(target / path.name, buffer.getvalue())
            dropped_total += dropped
            if dropped:
                err_console.print(f"{path.name}: {dropped} failed row(s) dropped (the reference script cannot read "
                                  f"an empty score)", markup=False, highlight=False)
        console.print(f"wrote {len(files)} file(s) to {target} ({dropped_total} failed row(s) dropped in all)")
    return 0


def register(sub) -> None:
    """`mmad eval` (with the options of --task classify) and `mmad export`."""
    ev = sub.add_parser("eval", help="metrics for result files (ours or the reference code's)",
                        formatter_class=HelpFormatter)
    ev.add_argument("paths", nargs="+", help="result CSV files or folders")
    ev.add_argument("--task", choices=("score", "classify", "qa"), default="score",
                    help="what the runs did: severity scores, anomaly classification, or MMAD-QA answers")
    fmt = ev.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="tables as Markdown")
    fmt.add_argument("--csv", action="store_true", help="numbers in [0, 1] (not percentages), for scripts")
    fmt.add_argument("--json", action="store_true", help="the metrics as JSON")
    ev.add_argument("--ties", choices=("half", "strict"), default="half",
                    help="tied scores across levels: half credit (reference stack) or none (paper)")
    ev.add_argument("--normal-up-to", type=nonneg_int, default=0, metavar="K", help="treat severity levels <= K as normal")
    ev.add_argument("--bootstrap", type=bootstrap_count, default=0, metavar="N",
                    help="seeded 95%% bootstrap intervals from N resamples (0 = off)")
    ev.add_argument("--seed", type=nonneg_int, default=0, help="seed of --bootstrap")
    ev.add_argument("--agreement", action="store_true",
                    help="Spearman correlation between the run rankings by AUROC, C-index and tau-b (3+ runs)")
    ev.add_argument("--root", help="data root whose discovered datasets are recognised in file names")
    ev.add_argument("--dataset", help="the dataset of a result file whose name does not say it")
    ev.add_argument("--subset", help="the subset of a result file whose name does not say it")
    add_classify_eval_options(ev)
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("export", help="result files in another format", formatter_class=HelpFormatter)
    ex.add_argument("runs", nargs="+", help="run folders or result CSV files")
    ex.add_argument("--reference-format", action="store_true",
                    help="CSVs the reference get_performance.py reads unchanged (failed rows dropped)")
    ex.add_argument("--out", help="output folder (default: <run folder>-reference beside each run)")
    ex.set_defaults(func=cmd_export)
