"""Command line: the parser and the exit codes. Commands live in cli_data, cli_eval, cli_score,
cli_estimate and cli_detect.

Only the CLI prints. Library errors (`MmadError`) become one line on stderr and a non-zero exit
(the codes are listed in mmad.errors).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from mmad import config
from mmad.cli_output import err_console
from mmad.cli_options import (HelpFormatter, Parser, add_data_options, add_detector_options, add_engine_options,
                              add_job_options, bootstrap_count, corruption, detector_name, listed, nonneg_int,
                              positive_int, refs_count)
from mmad import __version__
from mmad.errors import MmadError, StorageError, describe_os_error


def _data_parsers(sub) -> None:
    from mmad import cli_data
    data = sub.add_parser("data", help="datasets: list, fetch, synth, check", formatter_class=HelpFormatter)
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, func, text in (("list", cli_data.cmd_data_list, "known datasets and what is present locally"),
                             ("fetch", cli_data.cmd_data_fetch, "download the published dataset into the layout"),
                             ("synth", cli_data.cmd_data_synth, "write the offline demo dataset"),
                             ("check", cli_data.cmd_data_check, "validate templates and decode every image")):
        p = data_sub.add_parser(name, help=text, formatter_class=HelpFormatter)
        p.set_defaults(func=func)
        if name == "check":
            add_data_options(p)
            p.add_argument("--refs", type=refs_count, default=3, help="reference images to check per subset")
            p.add_argument("--workers", type=positive_int, default=4, help="decoding threads")
            continue
        p.add_argument("--root", help=f"data root (default ${config.DATA_ROOT_ENV} or ./data)")
        if name == "list":
            p.add_argument("-v", "--verbose", action="store_true", help="also each subset present locally and its template file")
        if name == "fetch":
            p.add_argument("--source", default="tricao1105/MultilevelADSet",
                           help="hub dataset id or a local folder saved with save_to_disk")
        if name == "synth":
            p.add_argument("--train", type=positive_int, default=20, help="normal training images per subset")
            p.add_argument("--per-level", type=positive_int, default=10, help="test images per level")
            p.add_argument("--size", type=positive_int, default=224, help="image side in pixels")
            p.add_argument("--seed", type=int, default=0, help="seed of the generated images")

    cache = sub.add_parser("cache", help="the response cache: check, rebuild", formatter_class=HelpFormatter)
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    check = cache_sub.add_parser("check", help="integrity of the response cache", formatter_class=HelpFormatter)
    check.set_defaults(func=cli_data.cmd_cache_check)
    rebuild = cache_sub.add_parser("rebuild", help="set a damaged cache aside and refill it from result JSONL files",
                                   formatter_class=HelpFormatter)
    rebuild.add_argument("--from", dest="sources", nargs="+", required=True, metavar="RESULTS",
                         help="result folders or JSONL files whose records keep the raw answers")
    rebuild.set_defaults(func=cli_data.cmd_cache_rebuild)
    for p in (check, rebuild):
        p.add_argument("--cache-dir", help=f"response cache (default ${config.CACHE_DIR_ENV} or ./cache)")


def _eval_parsers(sub) -> None:
    from mmad import cli_eval
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
    ev.add_argument("--seed", type=int, default=0, help="seed of --bootstrap")
    ev.add_argument("--agreement", action="store_true",
                    help="Spearman correlation between the run rankings by AUROC, C-index and tau-b (3+ runs)")
    ev.add_argument("--root", help="data root whose discovered datasets are recognised in file names")
    ev.add_argument("--dataset", help="the dataset of a result file whose name does not say it")
    ev.add_argument("--subset", help="the subset of a result file whose name does not say it")
    ev.set_defaults(func=cli_eval.cmd_eval)

    ex = sub.add_parser("export", help="result files in another format", formatter_class=HelpFormatter)
    ex.add_argument("runs", nargs="+", help="run folders or result CSV files")
    ex.add_argument("--reference-format", action="store_true",
                    help="CSVs the reference get_performance.py reads unchanged (failed rows dropped)")
    ex.add_argument("--out", help="output folder (default: <run folder>-reference beside each run)")
    ex.set_defaults(func=cli_eval.cmd_export)


def build_parser() -> argparse.ArgumentParser:
    from mmad.cli_detect import cmd_baseline
    from mmad.cli_score import cmd_score
    parser = Parser(
        prog="mmad", description="Measure how well anomaly scores follow anomaly severity (MAD-Bench): "
                                 "score datasets with MLLMs or conventional detectors, then evaluate.",
        formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _data_parsers(sub)
    _eval_parsers(sub)

    sc = sub.add_parser("score", help="score a dataset with a multimodal model or a conventional detector",
                        formatter_class=HelpFormatter)
    add_job_options(sc, providers=("openai", "anthropic", "patchcore", "padim", "rd"), detectors=True)
    add_engine_options(sc)
    add_detector_options(sc, with_seed=False)
    sc.set_defaults(func=cmd_score, estimate_only=False)

    es = sub.add_parser("estimate", help="tokens and USD that `mmad score` would spend (cached jobs are free)",
                        formatter_class=HelpFormatter)
    add_job_options(es, providers=("openai", "anthropic"), detectors=False)
    es.add_argument("--json", action="store_true", help="per variant and subset, as JSON")
    es.add_argument("-v", "--verbose", action="store_true", help="a row per subset")
    es.set_defaults(func=cmd_score, estimate_only=True, dry_run=False, max_cost=None)

    bl = sub.add_parser("baseline", help="full-shot conventional detector on the whole normal train split",
                        formatter_class=HelpFormatter)
    bl.add_argument("method", type=detector_name(("patchcore", "padim", "rd")),
                    help="patchcore, padim, rd, or anomalib:MODEL (see `mmad score --help`)")
    add_data_options(bl)
    bl.add_argument("--out", help="output folder (default results/<run-name>)")
    bl.add_argument("--run-name", help="file-name prefix (default <method>-fullshot)")
    bl.add_argument("--corrupt", action="append", type=listed(corruption),
                    help="brightness:S or gaussian_noise:S on the test images")
    bl.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    add_detector_options(bl)
    bl.set_defaults(func=cmd_baseline)
    from mmad.cli_report import register as register_report
    register_report(sub)
    from mmad.cli_compare import register as register_compare
    register_compare(sub)
    from mmad.qa.cli import register as register_qa
    register_qa(sub)
    from mmad.cli_hybrid import register as register_hybrid
    register_hybrid(sub)
    return parser


BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE (`mmad ... | head`)
INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in mmad, not in the input


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MmadError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except BrokenPipeError:  # the reader left (`| head`): what it read is all it wanted; say nothing more
        _silence_stdout()
        return BROKEN_PIPE
    except OSError as exc:  # a file no command anticipated: still one line naming it
        if exc.errno in (errno.EEXIST, errno.ENOTDIR) and exc.filename:
            what = f"{exc.filename}: a file is in the way of a folder mmad needs there"
        else:
            what = describe_os_error(exc.filename or "a file", exc)
        return _fail(what, StorageError.exit_code)
    except Exception as exc:  # a bug: one line, and the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        return _fail(f"internal error, please report it: {type(exc).__name__}: {exc} "
                     f"(set {DEBUG_ENV}=1 for the traceback)", INTERNAL_ERROR)


DEBUG_ENV = "MMAD_DEBUG"


def _fail(message: str, code: int) -> int:
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
