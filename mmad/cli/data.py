"""`mmad data ...` and `mmad cache ...`: datasets, their validation, and the response cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from mmad import config
from mmad.cli.options import (
    HelpFormatter,
    add_data_options,
    bounded_int,
    cache_help,
    nonneg_int,
    positive_int,
    refs_count,
    root_help,
)
from mmad.cli.output import console, err_console
from mmad.data import datasets
from mmad.data.templates import read_template
from mmad.errors import DataError, StorageError

SYNTH_MAX_SIZE = 500  # the scikit-image textures are 512 px: a crop must leave room to move

if TYPE_CHECKING:
    from mmad.cache.repair import Rebuild


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
    unreadable: list[str] = []
    for name, subsets in sorted(extra.items()):
        try:
            read = [read_template(s.template_path) for s in subsets]
        except DataError as exc:  # one bad template never hides the other datasets; the exit code says it
            unreadable.append(str(exc))
            table.add_row(name, subsets[0].domain, subsets[0].prompt_family or "(set --prompt-family)", "—",
                          str(len(subsets)), "—", "a template cannot be read (below)")
            continue
        levels = max(int(t.levels.max()) for t in read) + 1
        table.add_row(name, subsets[0].domain, subsets[0].prompt_family or "(set --prompt-family)",
                      str(levels), str(len(subsets)), str(sum(len(t) for t in read)),
                      f"{len(subsets)}/{len(subsets)} (discovered)")
    console.print(table)
    for problem in unreadable:
        err_console.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
    if args.verbose:
        for _, item in sorted(present.items()):
            console.print(f"  {item.label}: {item.template_path}")
    return 2 if unreadable else 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mmad.data.synth import synthesize

    root = config.data_root(args.root)
    templates = synthesize(root, train=args.train, per_level=args.per_level, size=args.size, seed=args.seed)
    console.print(f"wrote demo dataset 'synth' ({len(templates)} subsets) under {root}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mmad.data.fetch import load_records, write_records

    root = config.data_root(args.root)
    written, skipped = write_records(load_records(args.source), root)
    console.print(f"{written} images written, {skipped} already present, under {root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Templates, then every image decoded in full (threads), with the decoding speed."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from mmad.data.images import decode_check
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
    from mmad.cache.repair import NO_CACHE, check_cache
    from mmad.cache.store import STORE
    directory = config.cache_dir(args.cache_dir)
    entries, verdict = check_cache(directory)
    console.print(f"{directory / STORE}: {entries} answers, {verdict}", markup=False, highlight=False)
    if verdict not in ("ok", NO_CACHE):
        raise StorageError(f"the response cache {directory / STORE} is damaged ({verdict}); "
                           f"`mmad cache rebuild --cache-dir {directory} --from results/` sets it aside and "
                           f"rebuilds it from your result files and what it still yields")
    return 0


def cmd_cache_rebuild(args: argparse.Namespace) -> int:
    """Merge into a healthy cache; set a damaged one aside, salvage it, and say what was lost."""
    from mmad.cache.repair import rebuild_cache
    from mmad.cache.store import STORE
    from mmad.results.files import JsonlLog
    directory = config.cache_dir(args.cache_dir)
    files: list[Path] = []
    given: set[Path] = set()
    for source in (Path(p) for p in args.sources):
        if source.is_dir():
            files.extend(sorted(source.rglob("*.jsonl")))
        elif source.is_file():
            files.append(source)
            given.add(source)
        else:
            from mmad.paths import describe_target
            found = describe_target(source)
            raise DataError(f"{source}: no such file or folder" if found == "missing"
                            else f"{source} is {found}, not a result file or folder")
    read = {path: [r for r in JsonlLog.read(path) if isinstance(r, dict) and "key" in r] for path in files}
    empty = [path for path, found in read.items() if not found]
    for path in empty:  # checked before the cache is touched
        if path in given:
            raise DataError(f"{path}: no result records (the JSONL files mmad score writes beside its CSVs)")
    if empty:
        err_console.print(f"note: {_count(len(empty), 'JSONL file')} held no result records and "
                          f"{'was' if len(empty) == 1 else 'were'} skipped: {', '.join(map(str, empty[:3]))}"
                          f"{' ...' if len(empty) > 3 else ''}", markup=False, highlight=False)
    done = rebuild_cache(directory, (record for found in read.values() for record in found))
    store, named = directory / STORE, _count(len(files) - len(empty), "record file")
    lines = []
    if done.healthy and done.verdict == "ok":
        lines.append(f"cache healthy: kept {_count(done.kept, 'answer')}, added {done.added} from {named} ({store})")
    elif done.healthy:
        lines.append(f"no cache here yet: created {store} with {_count(done.added, 'answer')} from {named}")
    else:
        lines += [f"the response cache {store} is damaged ({done.verdict}); set it aside as {done.aside} (kept)",
                  f"restored {_count(done.added, 'paid answer')} from {named}", _salvage_line(done),
                  f"the cache now holds {_count(done.total, 'answer')}; {_lost_line(done)}"]
    if done.disagreed:
        lines.append(f"{_count(done.disagreed, 'record')} disagreed with the answer already cached for its key; "
                     f"the cached answer was kept")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _salvage_line(done: Rebuild) -> str:
    salvage = done.salvage
    assert salvage is not None, "a damaged store is always salvaged"
    if not salvage.readable:
        return f"nothing could be read from the damaged store ({salvage.reason or 'it held no answers'})"
    held = f" of {salvage.held}" if (salvage.held or 0) >= salvage.readable else ""
    line = (f"salvaged {salvage.readable}{held} answers still readable in the damaged store "
            f"({done.salvaged_new} of them in no record file)")
    if done.salvage_disagreed:
        line += (f"; {done.salvage_disagreed} differed from the record files' answer for their key and were "
                 f"not used (the record's kept)")
    return line


def _lost_line(done: Rebuild) -> str:
    """Unreadable answers that no record brought back are lost: paid again only if asked again."""
    if done.lost_unknown is None:
        return ("how many answers the damaged store held cannot be read; any that no record file holds "
                "will be paid again if asked again")
    if done.lost_unknown:
        return (f"at most {_count(done.lost + done.lost_unknown, 'answer')} lost (the damaged store's index "
                f"names {done.lost} unreadable ones no record file holds); they are paid again only if asked again")
    if done.lost:
        return f"{_count(done.lost, 'answer')} lost (unreadable, in no record file): paid again only if asked again"
    return "no answer lost"


def register(sub) -> None:
    """`mmad data ...` and `mmad cache ...`."""
    data = sub.add_parser("data", help="datasets: list, fetch, synth, check", formatter_class=HelpFormatter)
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, func, text in (("list", cmd_data_list, "known datasets and what is present locally"),
                             ("fetch", cmd_data_fetch, "download the published dataset into the layout"),
                             ("synth", cmd_data_synth, "write the offline demo dataset"),
                             ("check", cmd_data_check, "validate templates and decode every image")):
        p = data_sub.add_parser(name, help=text, formatter_class=HelpFormatter)
        p.set_defaults(func=func)
        if name == "check":
            add_data_options(p)
            p.add_argument("--refs", type=refs_count, default=3, help="reference images to check per subset")
            p.add_argument("--workers", type=positive_int, default=4, help="decoding threads")
            continue
        p.add_argument("--root", help=root_help())
        if name == "list":
            p.add_argument("-v", "--verbose", action="store_true", help="also each subset present locally and its template file")
        if name == "fetch":
            p.add_argument("--source", default="tricao1105/MultilevelADSet",
                           help="hub dataset id or a local folder saved with save_to_disk")
        if name == "synth":
            p.add_argument("--train", type=bounded_int(1, 10_000), default=20, help="normal training images per subset")
            p.add_argument("--per-level", type=bounded_int(1, 10_000), default=10, help="test images per level")
            p.add_argument("--size", type=bounded_int(32, SYNTH_MAX_SIZE, " pixels"), default=224,
                           help=f"image side in pixels, 32 to {SYNTH_MAX_SIZE} (crops of the 512-px textures)")
            p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the generated images")

    cache = sub.add_parser("cache", help="the response cache: check, rebuild, stats, prune", formatter_class=HelpFormatter)
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    check = cache_sub.add_parser("check", help="integrity of the response cache", formatter_class=HelpFormatter)
    check.set_defaults(func=cmd_cache_check)
    rebuild = cache_sub.add_parser("rebuild", help="set a damaged cache aside and refill it from result JSONL files",
                                   formatter_class=HelpFormatter)
    rebuild.add_argument("--from", dest="sources", nargs="+", required=True, metavar="RESULTS",
                         help="result folders or JSONL files whose records keep the raw answers")
    rebuild.set_defaults(func=cmd_cache_rebuild)
    for p in (check, rebuild):
        p.add_argument("--cache-dir", help=cache_help())
    from mmad.cli.cache import register as register_cache
    register_cache(cache_sub)
