"""`mmad view --export DIR`: the view as a folder that opens from file:// (no server).

Browsers do not let a page opened from a file fetch other files, but they do run the scripts it
names: every payload is written as `data/<name>.js`, a script that hands its JSON to the page
(`window.mmadData(name, payload)`). The page is the live view's (`index.html` with
`data-mode="export"`); images as sent and thumbnails are files under `img/`. Verdicts are written for
the pairs of runs that are variants of one another (mmad.comparison.pairs.comparable_pairs, the
report's rule); any two runs can still be put side by side, their items paired in the page.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from mmad.errors import MmadError, StorageError, describe_os_error
from mmad.view.payloads import NotFound, ViewData
from mmad.view.server import STATIC, dumps


def script_name(name: str) -> str:
    return name.replace("/", "-")


def _write(target: Path, data: bytes | str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            target.write_text(data, encoding="utf-8")
        else:
            target.write_bytes(data)
    except OSError as exc:
        raise StorageError(f"cannot write {describe_os_error(target, exc)}") from None


def _payload(out: Path, name: str, payload: object) -> None:
    _write(out / "data" / f"{script_name(name)}.js", f"window.mmadData({json.dumps(name)}, {dumps(payload)});\n")


def export(data: ViewData, out: Path, *, images: bool = True,
           progress: Callable[[str], None] | None = None) -> dict:
    """Write the whole view under `out`; returns counts of what was written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise MmadError(f"--export {out}: the folder is not empty and holds no earlier export; name a new folder")
    live = (data.image_url, data.thumb_url)
    data.image_url = lambda rid, row, index: None  # set per image once its type is known
    data.thumb_url = lambda rid, row: f"img/t-{rid}-{row}.png" if images else ""
    counts = {"runs": 0, "items": 0, "images": 0, "verdicts": 0}
    try:
        shutil.copytree(STATIC, out / "static", dirs_exist_ok=True)
        page = (STATIC / "index.html").read_text(encoding="utf-8").replace('data-mode="live"', 'data-mode="export"')
        _write(out / "index.html", page)
        listing = data.runs()
        for entry in listing["runs"]:
            rid = entry["rid"]
            run_page = data.run_payload(rid)
            _payload(out, f"run/{rid}", run_page)
            _payload(out, f"text/{rid}", data.text_payload(rid))
            entry["summary"] = {k: v for k, v in run_page.items() if k not in ("info", "per_subset", "columns")}
            _payload(out, f"summary/{rid}", entry["summary"])
            for row in range(run_page["columns"]["n"]):
                counts["images"] += _export_item(data, out, rid, row, images)
                counts["items"] += 1
            counts["runs"] += 1
            if progress:
                progress(f"{entry['name']}: {run_page['columns']['n']} items")
        listing["verdicts"] = _export_verdicts(data, out, counts)
        _payload(out, "runs", listing)
    finally:
        data.image_url, data.thumb_url = live
    return counts


EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def _export_item(data: ViewData, out: Path, rid: str, row: int, images: bool) -> int:
    """The item's payload, its images as sent and its thumbnail; returns the images written."""
    item = data.item(rid, row)
    written = 0
    for index, image in enumerate((item.get("request") or {}).get("images", [])):
        image["url"] = None
        if not images:
            continue
        try:
            body, media_type = data.image(rid, row, index)
        except (NotFound, OSError):
            continue
        name = f"{rid}-{row}-{index}.{EXTENSIONS.get(media_type, 'png')}"
        _write(out / "img" / name, body)
        image["url"] = f"img/{name}"
        written += 1
    _payload(out, f"item/{rid}/{row}", item)
    if images:
        try:
            _write(out / "img" / f"t-{rid}-{row}.png", data.thumb(rid, row))
        except (NotFound, OSError):
            pass
    return written


def _export_verdicts(data: ViewData, out: Path, counts: dict) -> list[list[str]]:
    from mmad.comparison.pairs import comparable_pairs
    runs = data.catalog.runs
    pairs = []
    for first, second, _ in comparable_pairs([r for r in runs if r.info is not None]):
        for a, b in ((first, second), (second, first)):  # either can be the base on the page
            _payload(out, f"verdict/{a.rid}/{b.rid}", data.verdict(a.rid, b.rid))
            pairs.append([a.rid, b.rid])
            counts["verdicts"] += 1
    return pairs

