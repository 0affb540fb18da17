"""`mmad view` (a local web app over result folders, or a static export) and `mmad runs` (its
runs page in the terminal). The library half is mmad.view."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from mmad import config
from mmad.cli.options import HelpFormatter, bounded_int, root_help
from mmad.cli.output import console, err_console, percent, tau
from mmad.errors import ConfigError, MmadError

DEFAULT_RESULTS = ("results", "results-classify")
DEFAULT_PORT = 8321


def register(sub) -> None:
    vw = sub.add_parser("view", help="every run and every answer in the browser (a local web app)",
                        formatter_class=HelpFormatter)
    rn = sub.add_parser("runs", help="one row per run found in result folders", formatter_class=HelpFormatter)
    for p in (vw, rn):
        p.add_argument("results", nargs="*", metavar="RESULTS",
                       help="result folders or files (default: ./results and ./results-classify where they exist)")
        p.add_argument("--root", help=root_help("data root, to place result files of a dataset of your own (and, in "
                                                "view, for the images)"))
    vw.add_argument("--port", type=bounded_int(0, 65535), help=f"port on 127.0.0.1 (default: {DEFAULT_PORT}, or a free one when "
                                                    f"taken; 0 = any free port)")
    vw.add_argument("--no-open", action="store_true", help="do not open a browser")
    vw.add_argument("--export", metavar="DIR", help="write a static copy that opens from file:// instead of serving")
    vw.add_argument("--no-images", action="store_true", help="with --export: leave out the images (a smaller copy)")
    vw.add_argument("--prompts-dir", help=f"prompt folder of the runs (default ${config.PROMPTS_DIR_ENV} or the "
                                          f"packaged prompts)")
    vw.add_argument("--qa-root", help="MMAD-QA root, for the images of QA runs (default $MMAD_QA_ROOT or ./mmad-qa)")
    rn.add_argument("--json", action="store_true", help="the rows as JSON")
    vw.set_defaults(func=cmd_view)
    rn.set_defaults(func=cmd_runs)


def _sources(args: argparse.Namespace) -> list[Path]:
    if args.results:
        missing = [p for p in args.results if not Path(p).exists()]
        if missing:
            raise ConfigError(f"{missing[0]}: no such file or folder")
        return [Path(p) for p in args.results]
    found = [Path(p) for p in DEFAULT_RESULTS if Path(p).is_dir()]
    if not found:
        raise ConfigError("no ./results or ./results-classify here: name the result folders (mmad view FOLDER...)")
    return found


def _open(args: argparse.Namespace, scratch: Path):
    from mmad.qa.data import qa_root
    from mmad.view.payloads import open_view
    return open_view(_sources(args), data_root=config.data_root(args.root),
                     prompts_dir=config.prompts_dir(getattr(args, "prompts_dir", None)),
                     qa_root=qa_root(getattr(args, "qa_root", None)), scratch=scratch)


def cmd_view(args: argparse.Namespace) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="mmad-view-"))
    try:
        data = _open(args, scratch)
        if args.export:
            from mmad.view.export import export
            counts = export(data, Path(args.export), images=not args.no_images,
                            progress=None if not err_console.is_terminal else
                            (lambda line: err_console.print(line, markup=False, highlight=False)))
            console.print(f"wrote {counts['runs']} runs, {counts['items']} items, {counts['images']} images and "
                          f"{counts['verdicts']} verdicts to {args.export}; open "
                          f"{(Path(args.export) / 'index.html').resolve().as_uri()}", markup=False, highlight=False)
            return _say_unreadable(data.catalog)
        from mmad.view.server import bind, serve
        sock = bind(DEFAULT_PORT if args.port is None else args.port, fallback=args.port is None)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        console.print(f"mmad view: {len(data.catalog.runs)} runs at {url} (Ctrl-C stops it)", markup=False,
                      highlight=False)
        for note in data.catalog.notes:
            err_console.print(f"note: {note}", markup=False, highlight=False)
        _say_unreadable(data.catalog)
        if not args.no_open:
            _open_browser(url)
        try:
            serve(data, sock)
        except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: not an abort
            pass
        console.print("mmad view: stopped", markup=False, highlight=False)
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _short(value: object, cap: int = 48) -> str:
    """A setting in the runs table: long values (an anomalib model's whole settings) cut, the
    whole value is in `mmad runs --json` and run.json."""
    text = str(value)
    return text if len(text) <= cap else text[:cap - 1] + "…"


def _say_unreadable(catalog) -> int:
    """One line per folder left out (a damaged run.json); 2 when there is one, else 0."""
    for bad in catalog.unreadable:
        err_console.print(f"error: {bad['folder']} left out: {bad['error']}", markup=False, highlight=False,
                          soft_wrap=True)
    return 2 if catalog.unreadable else 0


def _open_browser(url: str) -> None:
    """A graphical browser when there is a display; never a text browser taking over the terminal."""
    import os
    import webbrowser
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        err_console.print("note: no display here: open the URL in a browser (an SSH tunnel: ssh -L PORT:127.0.0.1:PORT)",
                          markup=False, highlight=False)
        return
    try:
        webbrowser.get()
    except webbrowser.Error:
        err_console.print("note: no browser found: open the URL yourself", markup=False, highlight=False)
        return
    webbrowser.open(url)


def cmd_runs(args: argparse.Namespace) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="mmad-runs-"))
    try:
        data = _open(args, scratch)
        rows, unreadable = [], list(data.catalog.unreadable)
        for run in data.catalog.runs:
            try:
                rows.append(data.summary(run.rid))
            except MmadError as exc:  # one damaged run does not hide the others; the exit code says it
                unreadable.append({"name": run.label, "folder": str(run.folder), "error": str(exc)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps({"runs": rows, "unreadable": unreadable, "notes": data.catalog.notes}, indent=2))
        return 2 if unreadable else 0
    from rich.markup import escape
    from rich.table import Table
    table = Table(title=f"{len(rows)} runs")
    for column in ("run", "kind", "model", "prompt", "settings", "ok", "failed", "to-do", "$", "wall s", "AUC %",
                   "Ken", "C % / acc %"):
        table.add_column(column, justify="left" if column in ("run", "kind", "model", "prompt", "settings") else "right",
                         overflow="fold")
    for row in rows:
        words, jobs, metrics = row["settings"], row["jobs"], row["metrics"]
        other = ", ".join(f"{k}={_short(v)}" for k, v in words["other"].items())
        last = metrics.get("c_index", metrics.get("accuracy"))
        table.add_row(*map(escape, (row["name"], row["kind"], str(words["model"] or "—"), str(words["prompt"] or "—"),
                                    other or "—", str(jobs["ok"]), str(jobs["failed"]), str(jobs["todo"]),
                                    "—" if row["cost_usd"] is None else f"{row['cost_usd']:.2f}",
                                    "—" if row["wall_s"] is None else f"{row['wall_s']:.0f}",
                                    percent(metrics.get("auroc")), tau(metrics.get("kendall_tau_b")), percent(last))))
    console.print(table)
    for note in data.catalog.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False)
    for bad in unreadable:
        err_console.print(f"error: run {bad['name']} ({bad['folder']}): {bad['error']}", markup=False, highlight=False,
                          soft_wrap=True)
    return 2 if unreadable else 0
