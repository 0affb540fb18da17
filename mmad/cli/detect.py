"""`mmad baseline` and `mmad score --provider patchcore|padim|rd|anomalib:MODEL`: conventional detectors.

The same guarantees as MLLM runs: one writer per output folder, run.json refuses a folder made
with other settings, finished subsets are skipped (an interrupted baseline resumes), a progress
bar per subset, and an exit code that says whether every image was scored. Ctrl-C or SIGTERM
stops at the next batch (the subset in progress is abandoned unwritten, finished ones are kept),
one line says which signal and how many subsets are left, exit 1; a second signal aborts (130).
`mmad score` options a detector would ignore (the MLLM ones: --dry-run, --temperature, ...) are
refused when set, so a run never silently differs from what was asked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from mmad import config
from mmad.cli.options import (
    HelpFormatter,
    add_data_options,
    add_detector_options,
    corruption,
    detector_name,
    listed,
    run_name,
    score_actions,
)
from mmad.cli.output import err_console
from mmad.cli.signals import ABORTED, Aborted, stop_signals
from mmad.data import datasets
from mmad.errors import ConfigError, DataError, os_failure
from mmad.results.folders import set_aside
from mmad.results.runinfo import RUN_FILE, make_run_info, read_run_info, setting_differences
from mmad.scoring.value_checks import ANOMALIB_PREFIX

DETECTORS = ("patchcore", "padim", "rd")


def is_detector(provider: str) -> bool:
    """A built-in detector or an anomalib model (`anomalib:<Model>`)."""
    return provider in DETECTORS or provider.startswith(ANOMALIB_PREFIX)


def _conventional():
    """The torch side, imported only when asked for (mmad itself never imports torch)."""
    try:
        from mmad_conventional import run
    except ImportError as exc:
        raise ConfigError(f"conventional detectors need torch: pip install 'mmad[conventional]' "
                          f"({exc.name} missing)") from None
    return run


# What a detector run reads from the namespace (`mmad score` and `mmad baseline`); every other
# option of `mmad score` is for MLLM providers. --hybrid is refused by cmd_score with its own words.
DETECTOR_OPTIONS = frozenset({"provider", "dataset", "subset", "root", "refs", "corrupt", "out", "run_name", "seed",
                              "quiet", "device", "image_size", "batch_size", "backbone", "weights", "epochs",
                              "coreset_ratio", "hybrid", "fresh", "random_weights", "model_arg"})


def refuse_unused_options(args: argparse.Namespace, method: str) -> None:
    """A ConfigError naming every option the detectors ignore that was set to a non-default value."""
    unused = [max(action.option_strings, key=len) for action in score_actions()
              if action.option_strings and action.dest not in DETECTOR_OPTIONS and hasattr(args, action.dest)
              and getattr(args, action.dest) != action.default]
    if unused:
        verb = "is" if len(unused) == 1 else "are"
        raise ConfigError(f"{', '.join(unused)} {verb} for MLLM providers; a detector run (--provider {method}) "
                          f"sends nothing and costs nothing")


def cmd_detect(args: argparse.Namespace, method: str, refs: int | None) -> int:
    from mmad.atomic import atomic_write_text
    from mmad.engine.lock import lock_folders
    refuse_unused_options(args, method)
    run = _conventional()
    from mmad_conventional.features import resolve_device
    resolve_device(args.device)  # asking for a GPU that is not there is the first thing to say
    root = config.data_root(args.root)
    subsets = datasets.resolve(root, args.dataset, args.subset)
    corrupt_values = [v for group in (getattr(args, "corrupt", None) or []) for v in group]
    if len(corrupt_values) > 1:
        raise ConfigError("--corrupt takes one value for conventional detectors")
    corrupt = corrupt_values[0] if corrupt_values else None
    shots = f"{refs}shot" if refs is not None else "fullshot"
    suffix = f"+{corrupt.replace(':', '').replace('_', '-')}" if corrupt else ""
    run_name = args.run_name or f"{method.replace(':', '-').lower()}-{shots}{suffix}"  # anomalib-cflow-3shot
    out_dir = Path(args.out) if args.out else Path("results") / run_name
    settings = run.DetectorSettings(method=method, device=args.device, image_size=args.image_size,
                                    batch_size=args.batch_size, seed=args.seed, coreset_ratio=args.coreset_ratio,
                                    epochs=args.epochs, backbone=args.backbone,
                                    weights=Path(args.weights) if args.weights else None, corrupt=corrupt,
                                    random_weights=args.random_weights, model_args=_model_args(args))
    settings.check()  # the model and its arguments, before the folder is claimed
    info = make_run_info(run_name, "detector", settings.as_settings(refs))
    locks = lock_folders([out_dir])
    try:
        start_over = ("--fresh starts the folder over (its files move to <out>.replaced-<time>), or use another "
                      "--out or --run-name")
        if getattr(args, "fresh", False):
            aside = set_aside(out_dir)
            if aside is not None:
                err_console.print(f"--fresh: {out_dir} starts over; its previous files are in {aside}",
                                  markup=False, highlight=False)
        try:
            existing = read_run_info(out_dir)
        except DataError as exc:
            raise DataError(f"{exc}; {start_over}") from None
        if existing is not None and setting_differences(existing, info):
            raise ConfigError(f"{out_dir} holds the run {existing.get('run')!r} made with other settings "
                              f"({'; '.join(setting_differences(existing, info))}); {start_over}")
        if existing is None and any(out_dir.glob("*.csv")):
            raise ConfigError(f"{out_dir} already holds results without a run.json (an older or foreign run); "
                              f"{start_over}")
        try:
            atomic_write_text(out_dir / RUN_FILE, json.dumps(info, indent=1))
        except OSError as exc:
            raise os_failure("cannot write", out_dir / RUN_FILE, exc) from None
        try:
            with stop_signals() as signals:
                report = _run_with_progress(run, subsets, settings, out_dir, run_name, refs, quiet=args.quiet,
                                            should_stop=signals.requested)
        except Aborted:  # a second signal: whatever was being written removed its temporary file
            err_console.print(ABORTED, markup=False, highlight=False)
            return 130
    finally:
        locks.release()
    if report.left:
        err_console.print(f"{signals.reason}: {report.left} of {len(subsets)} subset(s) left; "
                          f"rerun the same command to resume", markup=False, highlight=False)
        return 1
    broken = sum(t.broken for t in report.timings)
    unscored = sum(t.unscored for t in report.timings)
    for path in report.csv_paths:
        err_console.print(f"results: {path}", markup=False, highlight=False)
    if broken:
        err_console.print(f"{broken} test image(s) could not be decoded and were recorded as errors "
                          f"(empty score; see the JSONL)", markup=False)
    if unscored:
        err_console.print(f"{unscored} test image(s) got a non-finite score from {method} and were recorded as "
                          f"errors (empty score; see the JSONL)", markup=False)
    return 6 if broken or unscored else 0


def _model_args(args: argparse.Namespace) -> dict:
    """--model-arg KEY=VALUE pairs; a key given twice is one line."""
    pairs = getattr(args, "model_arg", None) or []
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ConfigError(f"--model-arg {', '.join(twice)} given more than once")
    return dict(pairs)


def _run_with_progress(run, subsets, settings, out_dir, run_name, refs, *, quiet: bool, should_stop=None):
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err_console, disable=quiet or not err_console.is_terminal)
    tasks: dict[str, TaskID] = {}

    def on_progress(label: str, done: int, total: int, phase: str = "scoring") -> None:
        key = f"{label}: {phase}"
        if key not in tasks:
            tasks[key] = progress.add_task(key, total=total)
        progress.update(tasks[key], completed=done)

    def on_subset(timing) -> None:
        if quiet:
            return
        if timing.skipped:
            text = f"{timing.label}: already scored in {out_dir}, skipped"
        else:
            text = (f"{timing.label}: fit {timing.train_images} images in {timing.fit_s:.1f}s, scored "
                    f"{timing.test_images} in {timing.score_s:.1f}s on {timing.device}")
        progress.console.print(text, markup=False, highlight=False)

    def on_start(todo: int, done: int) -> None:
        if quiet:
            return
        count = f"{todo} of {todo + done} subset(s) ({done} already done)" if done else f"{todo} subset(s)"
        err_console.print(f"{settings.method}: fitting and scoring {count} on {settings.device}"
                          f"{' (the first subset loads the backbone)' if todo else ''}", markup=False)

    with progress:
        return run.run_detector(subsets, settings, out_dir=out_dir, run_name=run_name, refs=refs,
                                on_subset=on_subset, on_progress=on_progress, resume=True,
                                should_stop=should_stop, on_start=on_start)


def register(sub) -> None:
    """`mmad baseline` (full-shot); the few-shot detectors are `mmad score --provider patchcore|padim|rd|anomalib:MODEL`."""
    bl = sub.add_parser("baseline", help="full-shot conventional detector on the whole normal train split",
                        formatter_class=HelpFormatter)
    bl.add_argument("method", type=detector_name(DETECTORS),
                    help="patchcore, padim, rd, or anomalib:MODEL (see `mmad score --help`)")
    add_data_options(bl)
    bl.add_argument("--out", help="output folder (default results/<run-name>)")
    bl.add_argument("--run-name", type=run_name, help="file-name prefix (default <method>-fullshot)")
    bl.add_argument("--corrupt", action="append", type=listed(corruption),
                    help="brightness:S or gaussian_noise:S on the test images")
    bl.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    add_detector_options(bl)
    bl.set_defaults(func=cmd_baseline)


def cmd_baseline(args: argparse.Namespace) -> int:
    return cmd_detect(args, args.method, None)
