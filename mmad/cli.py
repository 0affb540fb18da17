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

from rich.table import Table

from mmad import config, datasets
from mmad.cli_output import console, err_console, percent, tau
from mmad.cli_score import cmd_baseline, cmd_score
from mmad.errors import ConfigError, MmadError


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
        templates = [datasets.read_template(s.template_path) for s in subsets]
        levels = max(int(t.levels.max()) for t in templates) + 1
        table.add_row(name, subsets[0].domain, subsets[0].prompt_family or "(set --prompt-family)",
                      str(levels), str(len(subsets)), str(sum(len(t) for t in templates)),
                      f"{len(subsets)}/{len(subsets)} (discovered)")
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
    # Several runs (models, prompt variants, methods) side by side: rows sorted by subset, then run.
    records = sorted(records, key=lambda r: (r.dataset, r.subset, r.run))
    header = ["run", "dataset", "subset", "n", "dropped", "AUC %", "Ken", "C %"] + [f"AUC L{lv} %" for lv in levels]
    rows = [[r.run, r.dataset, r.subset, str(r.n), str(r.dropped), percent(r.auroc), tau(r.kendall_tau_b),
             percent(r.c_index)] + [percent(r.auroc_by_level.get(lv, math.nan)) for lv in levels]
            for r in records]
    means = [[m.run, m.dataset, f"mean of {m.subsets}", "", "", percent(m.auroc), tau(m.kendall_tau_b),
              percent(m.c_index)] + [""] * len(levels)
             for m in sorted(dataset_means(records), key=lambda m: (m.dataset, m.run))]
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
            table.add_column(column, justify="left" if column in ("run", "dataset", "subset") else "right")
        for row in rows:
            table.add_row(*row)
        table.add_section()
        for row in means:
            table.add_row(*row, style="bold")
        console.print(table)
    if args.agreement:
        _print_agreement(records)
    dropped = sum(r.dropped for r in records)
    if dropped:
        err_console.print(f"note: {dropped} row(s) without a score were dropped (failed jobs), not imputed")
    return 0


def _print_agreement(records) -> None:
    """Do the metrics rank the runs alike? Spearman correlation of the run rankings they induce."""
    from mmad.analysis import run_means, ranking_agreement
    means = run_means(records)
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


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmad", description="Measure how well anomaly scores follow anomaly severity (MAD-Bench): "
                                 "score datasets with MLLMs or conventional detectors, then evaluate.")
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
    ev.add_argument("--agreement", action="store_true",
                    help="Spearman correlation between the run rankings by AUROC, C-index and tau-b (3+ runs)")
    ev.add_argument("--root", help="data root whose discovered datasets are recognised in file names")
    ev.set_defaults(func=cmd_eval)

    sc = sub.add_parser("score", help="score a dataset with a multimodal model or a conventional detector")
    _job_options(sc, providers=("openai", "anthropic", "patchcore", "padim", "rd"))
    sc.add_argument("--concurrency", type=int, help="requests in flight (default: enough for the rate limit)")
    sc.add_argument("--rpm", type=float, help="requests per minute cap (learned from headers when lower)")
    sc.add_argument("--tpm", type=float, help="tokens per minute cap (learned from headers when lower)")
    sc.add_argument("--max-attempts", type=int, default=6, help="tries per job, the first included")
    sc.add_argument("--image-workers", type=int, help="threads preparing images (default: all cores)")
    sc.add_argument("--retry-failed", action="store_true", help="redo jobs recorded as error/refused/parse_failed")
    sc.add_argument("--max-cost", type=float, metavar="USD",
                    help="stop before the next request could pass this spend; the run stays resumable")
    sc.add_argument("--batch", action="store_true",
                    help="use the provider's Batch API (half price, within 24 h); rerun the command to resume polling")
    sc.add_argument("--poll-interval", type=float, default=30.0, help="seconds between batch status checks")
    sc.add_argument("--batch-max-requests", type=int, help="split batches at this many requests")
    sc.add_argument("--batch-max-mb", type=float, help="split batches at this many MiB of requests")
    sc.add_argument("--dry-run", action="store_true", help="print the job count and the first request; send nothing")
    sc.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    _detector_options(sc)
    sc.set_defaults(func=cmd_score, estimate_only=False)

    es = sub.add_parser("estimate", help="tokens and USD that `mmad score` would spend (cached jobs are free)")
    _job_options(es, providers=("openai", "anthropic"))
    es.set_defaults(func=cmd_score, estimate_only=True, dry_run=False, max_cost=None)

    bl = sub.add_parser("baseline", help="full-shot conventional detector on the whole normal train split")
    bl.add_argument("method", choices=("patchcore", "padim", "rd"))
    bl.add_argument("--dataset", required=True)
    bl.add_argument("--subset")
    bl.add_argument("--root", help=f"data root (default ${config.DATA_ROOT_ENV} or ./data)")
    bl.add_argument("--out", help="output folder (default results/<run-name>)")
    bl.add_argument("--run-name", help="file-name prefix (default <method>-fullshot)")
    bl.add_argument("-q", "--quiet", action="store_true")
    _detector_options(bl)
    bl.set_defaults(func=cmd_baseline)
    from mmad.cli_compare import register as register_compare
    register_compare(sub)
    return parser


def _job_options(sc: argparse.ArgumentParser, providers: tuple[str, ...]) -> None:
    """What defines the jobs (shared by score and estimate, so both build the same requests)."""
    sc.add_argument("--provider", required=True, choices=providers,
                    help="an MLLM API, or a conventional detector fitted on the same few references")
    sc.add_argument("--model", help="model name (default: gpt-4o / claude-3-5-sonnet-latest, the paper's)")
    sc.add_argument("--dataset", required=True)
    sc.add_argument("--subset")
    sc.add_argument("--root", help=f"data root (default ${config.DATA_ROOT_ENV} or ./data)")
    sc.add_argument("--prompt", help="prompt name in prompts/ or a .toml file (default: the dataset's family)")
    sc.add_argument("--prompts-dir", help=f"prompt folder (default ${config.PROMPTS_DIR_ENV} or prompts/)")
    sc.add_argument("--refs", type=int, default=3, help="normal reference images per request (0 = zero-shot)")
    sc.add_argument("--prompt-family", choices=datasets.PROMPT_FAMILIES, help="for datasets it cannot be inferred for")
    sc.add_argument("--subject", help="object/class name put into the prompt")
    sc.add_argument("--base-url", help="OpenAI-compatible server (vLLM, Ollama, LM Studio) or API proxy")
    sc.add_argument("--out", help="output folder (default results/<run-name>)")
    sc.add_argument("--run-name", help="file-name prefix (default: the model name)")
    sc.add_argument("--cache-dir", help=f"response cache (default ${config.CACHE_DIR_ENV} or ./cache)")
    sc.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    sc.add_argument("--temperature", type=float, default=0.0)
    sc.add_argument("--max-tokens", type=int, default=300)
    sc.add_argument("--prices", help="price file (default $MMAD_PRICES or the packaged mmad/prices.toml)")
    sc.add_argument("--no-prompt-cache", dest="prompt_cache", action="store_false",
                    help="do not mark the fixed prefix for provider prompt caching")
    sc.add_argument("--detail", choices=("auto", "low", "high"),
                        help="OpenAI image detail (default: not sent = auto; estimates assume high)")


def _detector_options(parser: argparse.ArgumentParser) -> None:
    """PatchCore/PaDiM settings."""
    group = parser.add_argument_group("conventional detectors (patchcore, padim, rd)")
    group.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    group.add_argument("--image-size", type=int, default=224, help="images are resized to this square size")
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--backbone", choices=("efficientnet_lite0", "wide_resnet50_2", "resnet50"),
                       default="efficientnet_lite0", help="feature extractor (default: EfficientNet-Lite0, weights bundled)")
    group.add_argument("--weights", help="a local state-dict file for the backbone (required for the ResNets)")
    group.add_argument("--epochs", type=int, default=30, help="Reverse Distillation: student training epochs")
    group.add_argument("--coreset-ratio", type=float,
                       help="PatchCore memory bank kept (default 1.0 few-shot, 0.1 full-shot)")


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
