"""`mmad cache stats` and `mmad cache prune` (the library half is mmad.cache.admin)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmad import config
from mmad.cli.options import HelpFormatter, cache_help
from mmad.cli.output import console, err_console
from mmad.errors import ConfigError

DEFAULT_RESULTS = ("results", "results-classify")


def register(cache_sub) -> None:
    st = cache_sub.add_parser("stats", help="entries, bytes, by provider and model, oldest and newest",
                              formatter_class=HelpFormatter)
    pr = cache_sub.add_parser("prune", help="remove entries no result file needs (or older ones, one model's, "
                                            "one run's)", formatter_class=HelpFormatter)
    for p in (st, pr):
        p.add_argument("--cache-dir", help=cache_help())
        p.add_argument("--results", nargs="+", metavar="DIR",
                       help="result folders whose records need entries (default: ./results and ./results-classify "
                            "where they exist)")
        p.add_argument("--json", action="store_true", help="as JSON")
    pr.add_argument("--older-than", metavar="AGE", help="only entries stored more than AGE ago (90m, 12h, 30d, 2w)")
    pr.add_argument("--model", help="only the entries of this model")
    pr.add_argument("--run", metavar="RUN", help="only the entries this run folder's records use and no other "
                                                 "result file needs")
    pr.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    pr.add_argument("--force", action="store_true", help="also remove entries a result file needs (they will be "
                                                         "paid again), and prune while a run is writing")
    st.set_defaults(func=cmd_cache_stats)
    pr.set_defaults(func=cmd_cache_prune)


def _needs(args: argparse.Namespace, *, required: bool):
    from mmad.cache.admin import scan_results
    sources = [Path(p) for p in args.results] if args.results else [Path(p) for p in DEFAULT_RESULTS if Path(p).is_dir()]
    if not sources:
        if required:
            raise ConfigError("no result folders found (./results, ./results-classify): name them with --results so "
                              "the entries their runs need are kept, or add --force")
        return None
    return scan_results(sources)


def cmd_cache_stats(args: argparse.Namespace) -> int:
    from mmad.cache.admin import cache_stats, read_entries
    directory = config.cache_dir(args.cache_dir)
    stats = cache_stats(read_entries(directory), _needs(args, required=False))
    if args.json:
        print(json.dumps({"cache": str(directory), **stats}, indent=2))
        return 0
    from rich.table import Table
    needed = "needed" in stats
    table = Table(title=f"response cache {directory}: {stats['entries']:,} entries, {_mib(stats['bytes'])}, "
                        f"{stats['oldest'] or '—'} .. {stats['newest'] or '—'}")
    for column in ("provider", "model", "entries", "MiB", "oldest", "newest") + (("needed by results",) if needed else ()):
        table.add_column(column, justify="right" if column in ("entries", "MiB", "needed by results") else "left")
    for row in stats["by_model"]:
        table.add_row(row["provider"], row["model"], f"{row['entries']:,}", _mib(row["bytes"], unit=False),
                      row["oldest"] or "—", row["newest"] or "—", *((f"{row['needed']:,}",) if needed else ()))
    console.print(table)
    if not needed:
        console.print("note: no result folders scanned (./results, ./results-classify absent; --results DIR): "
                      "provider unknown (?) and needs not counted", markup=False, highlight=False)
    return 0


def _mib(size: int, unit: bool = True) -> str:
    return f"{size / 2**20:,.2f}" + (" MiB" if unit else "")


def cmd_cache_prune(args: argparse.Namespace) -> int:
    from mmad.cache.admin import apply_prune, check_not_busy, parse_age, plan_prune, read_entries
    directory = config.cache_dir(args.cache_dir)
    older = parse_age(args.older_than) if args.older_than is not None else None
    needs = _needs(args, required=not args.force)
    if needs is not None and not args.force:
        check_not_busy(needs)
    plan = plan_prune(read_entries(directory), needs, older_than=older, model=args.model,
                      run=Path(args.run) if args.run else None, force=args.force)
    removed = [e.key for e in plan.remove] if args.dry_run else apply_prune(directory, plan)
    freed = sum(e.size for e in plan.remove if e.key in set(removed))
    if args.json:
        print(json.dumps({"cache": str(directory), "dry_run": args.dry_run, "selected": plan.selected,
                          "removed" if not args.dry_run else "would_remove": removed,
                          "kept_needed": len(plan.kept_needed), "bytes": freed}, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    if args.dry_run:
        for entry in plan.remove:
            console.print(f"{entry.key}  {entry.model}  {entry.size:,} bytes", markup=False, highlight=False)
    kept = (f"; kept {len(plan.kept_needed):,} that result files need (--force removes them too: they would be "
            f"paid again)") if plan.kept_needed else ""
    err_console.print(f"{verb} {len(removed):,} of {plan.selected:,} selected entries ({_mib(freed)}) from "
                      f"{directory}{kept}", markup=False, highlight=False, soft_wrap=True)
    return 0
