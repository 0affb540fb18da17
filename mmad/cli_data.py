"""`mmad data ...` and `mmad cache ...`: datasets, their validation, and the response cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from mmad import config, datasets
from mmad.cli_output import console, err_console
from mmad.errors import DataError, StorageError


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
    """Templates, then every image decoded in full (threads), with the decoding speed."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from mmad.images import decode_check
    root = config.data_root(args.root)
    problems: list[str] = []
    total = 0
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for subset in datasets.resolve(root, args.dataset, args.subset):
            template = datasets.load_subset(subset)
            refs = datasets.reference_images(subset, args.refs)
            paths = list(refs) + [subset.test_root / rel for rel in template.paths]
            results = list(pool.map(decode_check, paths))
            total += len(paths)
            bad = [(path, why) for path, why in zip(paths, results) if why is not None]
            problems.extend(f"{path}: {why}" for path, why in bad)
            console.print(f"{subset.label}: {len(template)} rows, levels {sorted(set(template.levels.tolist()))}, "
                          f"references {[r.name for r in refs]}, {len(bad)} undecodable image(s)")
    elapsed = time.perf_counter() - started
    console.print(f"decoded {total} images in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} images/s, "
                  f"{args.workers} threads)")
    if problems:
        for line in problems[:20]:
            err_console.print(line, markup=False, highlight=False)
        more = " (first 20 shown)" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} image(s) cannot be decoded{more}")
    return 0


def cmd_cache_check(args: argparse.Namespace) -> int:
    from mmad.cache import STORE, check_cache
    directory = config.cache_dir(args.cache_dir)
    entries, verdict = check_cache(directory)
    console.print(f"{directory / STORE}: {entries} answers, {verdict}")
    if verdict not in ("ok", "no cache here yet"):
        raise StorageError(f"the response cache {directory / STORE} is damaged ({verdict}); "
                           f"`mmad cache rebuild --cache-dir {directory} --from results/` rebuilds it from your "
                           f"result files")
    return 0


def cmd_cache_rebuild(args: argparse.Namespace) -> int:
    from mmad.cache import rebuild_cache
    from mmad.results import JsonlLog
    directory = config.cache_dir(args.cache_dir)
    sources = [Path(p) for p in args.sources]
    files = []
    for source in sources:
        if source.is_dir():
            files.extend(sorted(source.rglob("*.jsonl")))
        elif source.is_file():
            files.append(source)
        else:
            raise DataError(f"{source}: no such file or folder")
    records = (record for path in files for record in JsonlLog.read(path))
    aside, restored = rebuild_cache(directory, records)
    if aside is not None:
        console.print(f"set the old store aside as {aside}")
    console.print(f"restored {restored} paid answers from {len(files)} result file(s) into {directory}")
    return 0
