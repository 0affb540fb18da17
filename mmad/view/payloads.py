"""What the front end receives, the same for the live server and a static export: the runs, a run's
page and item columns, an item with its rebuilt request, images, thumbnails, a verdict.

Everything is read on first use and kept while its files are unchanged (a run still writing is
read again when its files change). A run's items stay in memory for the last few runs opened.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmad.reading import read_bytes
from mmad.results.files import JsonlLog
from mmad.view.catalog import Catalog, RunFiles
from mmad.view.items import Items, load_items
from mmad.view.rebuild import Context, Rebuilt, Unavailable, image_bytes, rebuild, request_text
from mmad.view.summary import run_page, summarize

KEEP_RUNS = 6  # runs whose items stay in memory
THUMB_PX = 72


class NotFound(Exception):
    """No such run, item or image (a 404)."""


def image_url_live(rid: str, row: int, index: int) -> str:
    return f"api/image/{rid}/{row}/{index}"


def thumb_url_live(rid: str, row: int | str) -> str:
    return f"api/thumb/{rid}/{row}"


@dataclass
class ViewData:
    catalog: Catalog
    context: Context
    image_url: Callable[[str, int, int], str | None] = image_url_live  # (None: the export sets it per image)
    thumb_url: Callable[[str, int | str], str] = thumb_url_live
    _items: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _summaries: dict = field(default_factory=dict, repr=False)
    _rebuilt: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _loading: dict = field(default_factory=dict, repr=False)
    _subsets: dict = field(default_factory=dict, repr=False)
    _encoded: OrderedDict = field(default_factory=OrderedDict, repr=False)
    prices: object = None

    # ------------------------------------------------------------------ reading, cached

    def run(self, rid: str) -> RunFiles:
        found = self.catalog.get(rid)
        if found is None:
            raise NotFound(f"no run {rid}")
        return found

    def items(self, rid: str) -> tuple[RunFiles, Items]:
        run = self.run(rid)
        marker = run.signature()
        with self._lock:
            cached = self._items.get(rid)
            if cached and cached[0] == marker:
                self._items.move_to_end(rid)
                return run, cached[1]
            gate = self._loading.setdefault(rid, threading.Lock())
        with gate:  # one reader per run; the others wait for its result
            with self._lock:
                cached = self._items.get(rid)
                if cached and cached[0] == marker:
                    return run, cached[1]
            items = load_items(run)
            with self._lock:
                self._items[rid] = (marker, items)
                self._items.move_to_end(rid)
                while len(self._items) > KEEP_RUNS:
                    self._items.popitem(last=False)
        return run, items

    def summary(self, rid: str) -> dict:
        run = self.run(rid)
        marker = run.signature()
        cached = self._summaries.get(rid)
        if cached and cached[0] == marker:
            return cached[1]
        run, items = self.items(rid)
        value = summarize(run, items, self._price_table())
        self._summaries[rid] = (marker, value)
        return value

    def _price_table(self):
        if self.prices is None:
            from mmad.cost.prices import load_prices
            self.prices = load_prices()
        return self.prices

    # ------------------------------------------------------------------ payloads

    def runs(self) -> dict:
        """The runs as listed (from run.json and file names only), with summaries already known."""
        runs = self.catalog.scan()
        self.context.detectors = detectors_of(runs)
        out = []
        for run in runs:
            from mmad.view.summary import setting_words
            cached = self._summaries.get(run.rid)
            out.append({"rid": run.rid, "name": run.label, "kind": run.kind, "folder": str(run.folder),
                        "created": (run.info or {}).get("created"), "settings": setting_words(run),
                        "subsets": len(run.files), "summary": cached[1] if cached else None})
        return {"runs": out, "notes": self.catalog.notes, "sources": [str(s) for s in self.catalog.sources]}

    def run_payload(self, rid: str) -> dict:
        """The run page: summary, run.json, per-subset metrics, and the item columns (answer texts
        apart: `text_payload`, fetched when a text filter needs them)."""
        run, items = self.items(rid)
        cached = self._summaries.get(rid)
        known = cached[1] if cached and cached[0] == run.signature() else None  # the runs page read it already
        page = run_page(run, items, self._price_table(), known)
        self._summaries[rid] = (run.signature(), {k: v for k, v in page.items() if k not in ("info", "per_subset")})
        table = columns(rid, items, self.thumb_url)
        table["images"] = [self._image_root(run, result) is not None for result in items.files]
        return {**page, "columns": table}

    def text_payload(self, rid: str) -> dict:
        """Every item's raw answer (what the text filter searches and the side-by-side shows)."""
        _, items = self.items(rid)
        return {"raw": items.raw}

    def encoded(self, name: str, make: Callable[[], object], marker: object, encode: Callable[[object], str]) -> str:
        """A payload's JSON, kept while `marker` (its run's file signature) holds."""
        with self._lock:
            cached = self._encoded.get(name)
        if cached and cached[0] == marker:
            return cached[1]
        text = encode(make())
        with self._lock:
            self._encoded[name] = (marker, text)
            while len(self._encoded) > 2 * KEEP_RUNS:
                self._encoded.popitem(last=False)
        return text

    def rebuilt(self, rid: str, row: int) -> tuple[RunFiles, Items, Rebuilt | str]:
        run, items = self.items(rid)
        if not 0 <= row < len(items):
            raise NotFound(f"run {rid} has no item {row}")
        marker = (rid, row, run.signature())
        with self._lock:
            if marker in self._rebuilt:
                return run, items, self._rebuilt[marker]
        try:
            value: Rebuilt | str = rebuild(self.context, run, items.files[items.sub[row]], items.key[row],
                                           items.path[row], items.finals[row])
        except Unavailable as exc:
            value = str(exc)
        with self._lock:
            self._rebuilt[marker] = value
            while len(self._rebuilt) > 256:
                self._rebuilt.popitem(last=False)
        return run, items, value

    def item(self, rid: str, row: int) -> dict:
        run, items, rebuilt = self.rebuilt(rid, row)
        result = items.files[items.sub[row]]
        records = [r for r in JsonlLog.read(result.jsonl) if _item_key(run, r) == items.key[row]] if result.jsonl else []
        final = items.finals[row]
        out = {"rid": rid, "run": run.label, "kind": run.kind, "row": row, "subset": items.subsets[items.sub[row]],
               "key": items.key[row], "path": items.path[row], "severity": items.severity[row],
               "level": items.level(row), "score": items.score[row], "status": items.status[row],
               "misrank": items.misrank[row], "answer": items.answer[row], "truth": items.truth[row],
               "subtask": items.extra[row], "final": final, "records": records,
               "cache_key": (final or {}).get("key"), "settings": run.settings}
        if isinstance(rebuilt, str):
            out["request"] = {"unavailable": rebuilt}
            return out
        from mmad.data.images import prepared_size
        images = []
        for index, image in enumerate(rebuilt.images):
            width: int | None
            height: int | None
            try:
                width, height = prepared_size(image.path, image.spec)
            except OSError:
                width = height = None
            images.append({"label": image.label, "url": self.image_url(rid, row, index), "width": width,
                           "height": height, "source": self._shown_path(image.path), "spec": image.spec.token})
        out["request"] = {"system": rebuilt.system, "parts": rebuilt.parts, "history": rebuilt.history,
                          "note": rebuilt.note, "sent": rebuilt.sent, "key": rebuilt.key,
                          "matches": rebuilt.matches(final), "text": request_text(rebuilt), "images": images,
                          **rebuilt.extra}
        if run.kind == "classify":
            names = ((run.settings.get("classes") or {}).get("names") or {}).get(out["subset"])
            out["classes"] = names
        return out

    def _shown_path(self, path: Path) -> str:
        """A file as the page names it: relative to the working directory when under it; a contour
        the view drew again (in its scratch folder) by what it is."""
        try:
            path.resolve().relative_to(self.context.scratch.resolve())
            return "contour drawn again by the view from the detector's map (as the run drew it)"
        except ValueError:
            pass
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)

    def image(self, rid: str, row: int, index: int) -> tuple[bytes, str]:
        _, _, rebuilt = self.rebuilt(rid, row)
        if isinstance(rebuilt, str) or not 0 <= index < len(rebuilt.images):
            raise NotFound(f"no image {index} for item {row} of run {rid}")
        data, media_type, _, _ = image_bytes(rebuilt.images[index])
        return data, media_type

    def source_path(self, rid: str, row: int) -> Path:
        """The item's query image file (no request rebuilt: cheap enough for a page of thumbnails)."""
        run, items = self.items(rid)
        if not 0 <= row < len(items):
            raise NotFound(f"run {rid} has no item {row}")
        result = items.files[items.sub[row]]
        base = self._image_root(run, result)
        if base is None:
            raise NotFound(f"{result.label} is not under the data root {self.context.data_root}")
        return base / items.path[row]

    def _image_root(self, run: RunFiles, result) -> Path | None:
        """Where a subset's item paths are (the test folder; QA: its root); None when absent."""
        from mmad.data import datasets
        from mmad.errors import MmadError
        if run.kind == "qa":
            return self.context.qa_root if self.context.qa_root.is_dir() else None
        marker = (result.dataset, result.subset)
        if marker not in self._subsets:
            try:
                found = datasets.resolve(self.context.data_root, *marker)[0].test_root
                self._subsets[marker] = found if found.is_dir() else None
            except MmadError:
                self._subsets[marker] = None
        return self._subsets[marker]

    def thumb(self, rid: str, row: int) -> bytes:
        """A small PNG of the item's query image (its source file)."""
        from PIL import Image
        try:
            image = Image.open(io.BytesIO(read_bytes(self.source_path(rid, row))))
        except OSError as exc:
            raise NotFound(str(exc)) from None
        with image:
            image.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))
            rgb = image.convert("RGB")
            rgb.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            rgb.save(buffer, "PNG", optimize=False, compress_level=1)
        return buffer.getvalue()

    def verdict(self, a: str, b: str) -> dict:
        from mmad.view.verdicts import verdict
        return verdict(self.run(a), self.run(b))


def _item_key(run: RunFiles, record: dict) -> str | None:
    return record.get("question_id") if run.kind == "qa" else record.get("path")


def columns(rid: str, items: Items, thumb_url: Callable[[str, int | str], str]) -> dict:
    """The item table's columns (statuses and sources as codes into their lists)."""
    statuses = sorted(set(items.status))
    sources = sorted({s for s in items.source if s})
    status_code = {s: i for i, s in enumerate(statuses)}
    source_code = {s: i for i, s in enumerate(sources)}
    return {"n": len(items), "subsets": items.subsets, "sub": items.sub, "key": items.key, "path": items.path,
            "sev": items.severity, "score": items.score, "statuses": statuses,
            "status": [status_code[s] for s in items.status], "sources": sources,
            "source": [source_code.get(s, -1) if s else -1 for s in items.source], "tok": items.tokens,
            "lat": items.latency, "att": items.attempts, "reason": items.reason,
            "answer": items.answer, "truth": items.truth, "extra": items.extra, "mis": items.misrank,
            "thumb": thumb_url(rid, "ROW")}


def detectors_of(runs: list[RunFiles]) -> dict[str, Path]:
    return {run.name: run.folder for run in runs if run.kind == "detector"}


def open_view(sources: list[Path], *, data_root: Path, prompts_dir: Path, qa_root: Path, scratch: Path) -> ViewData:
    """The view over result folders (or files); nothing is read until asked for."""
    catalog = Catalog(tuple(Path(s) for s in sources), data_root)
    runs = catalog.scan()
    return ViewData(catalog, Context(data_root, prompts_dir, qa_root, scratch, detectors_of(runs)))
