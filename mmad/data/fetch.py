"""`mmad data fetch`: the published dataset through Hugging Face `datasets`, written into the layout.

Each record of the published dataset carries `image` and `relative_path`; the image bytes are
written verbatim (no JPEG re-encoding), atomically, and files already present are skipped, so an
interrupted fetch resumes.

MMAD-QA (`--source mmad-qa`, or its hub id): the image files of its hub dataset repository,
downloaded by `huggingface_hub` and written under the root at their paths in the repository;
its annotation file `mmad.json` is published apart and is not fetched here.
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from mmad.errors import ConfigError, DataError

HUB_DATASET = "tricao1105/MultilevelADSet"
MMAD_QA_HUB = "jiang-cc/MMAD"  # MMAD-QA's images on the hub (the id is unverified here: no hub access)
MMAD_QA_SOURCES = ("mmad-qa", MMAD_QA_HUB)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_PATTERNS = [f"*{suffix}" for suffix in IMAGE_SUFFIXES] + [f"*{suffix.upper()}" for suffix in IMAGE_SUFFIXES]


def _safe_target(root: Path, relative: str) -> Path:
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DataError(f"record relative_path {relative!r} is not a path inside the data root")
    return root / rel


def _image_bytes(image: object, suffix: str) -> bytes:
    if isinstance(image, Mapping) and image.get("bytes"):
        return bytes(image["bytes"])
    if isinstance(image, Mapping) and image.get("path"):
        return Path(image["path"]).read_bytes()
    if hasattr(image, "save"):  # a decoded PIL image
        buffer = io.BytesIO()
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix.lower(), "PNG")
        image.save(buffer, format=fmt)
        return buffer.getvalue()
    raise DataError(f"record image of type {type(image).__name__} cannot be written")


def write_records(records: Iterable[Mapping], root: Path,
                  progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Write `image` to `root/relative_path` for each record; returns (written, skipped)."""
    written = skipped = 0
    for number, record in enumerate(records, start=1):
        if "relative_path" not in record or "image" not in record:
            raise DataError(f"record {number}: needs fields 'image' and 'relative_path'")
        target = _safe_target(root, str(record["relative_path"]))
        if target.exists():
            skipped += 1
            continue
        payload = _image_bytes(record["image"], target.suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(payload)
        os.replace(tmp, target)
        written += 1
        if progress:
            progress(number)
    return written, skipped


def check_hub_reachable(timeout: float = 5.0) -> None:
    """Fail at once, in one line, when the hub cannot be reached (its client would retry for long)."""
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return  # the library answers offline mode itself, at once
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise DataError(f"cannot reach the Hugging Face hub at {host}:{port} ({exc.strerror or exc}); offline? "
                        f"Download elsewhere and pass the folder with --source, or set HF_ENDPOINT") from None


def load_records(source: str = HUB_DATASET) -> Iterable[Mapping]:
    """Every record of every split, with images left undecoded. `source` may be a local folder."""
    if source in MMAD_QA_SOURCES:
        yield from mmad_qa_records()
        return
    looks_local = source.startswith(("/", ".", "~")) or os.sep + os.sep in source or source.count("/") > 1
    if looks_local and not Path(source).expanduser().exists():
        raise DataError(f"--source {source}: no such folder (a hub dataset id looks like owner/name)")
    try:
        import datasets
    except ImportError:
        raise ConfigError("`mmad data fetch` needs the `datasets` library: pip install 'mmad[fetch]'") from None
    local = Path(source).expanduser()
    source = str(local) if looks_local else source
    saved = local.is_dir() and any((local / name).exists() for name in ("dataset_dict.json", "dataset_info.json"))
    if not saved and not local.exists():
        check_hub_reachable()
    try:
        if saved:
            loaded = datasets.load_from_disk(source)
        else:
            loaded = datasets.load_dataset(source)
    except Exception as exc:  # the hub client raises many unrelated types when offline
        raise DataError(f"cannot load dataset {source!r} ({type(exc).__name__}: {str(exc)[:160]}); "
                        f"is the Hugging Face hub reachable? Set HF_ENDPOINT or pass a local folder "
                        f"with --source") from None
    splits = loaded.values() if isinstance(loaded, Mapping) else [loaded]
    for split in splits:
        yield from split.cast_column("image", datasets.Image(decode=False))


def mmad_qa_records(repo_id: str = MMAD_QA_HUB) -> Iterable[Mapping]:
    """MMAD-QA's image files as records ({"image": {"path"}, "relative_path"}), from the hub
    dataset repository `repo_id` (downloaded into the Hugging Face cache, then copied by
    `write_records`); fails at once, in one line, when the hub cannot be reached."""
    check_hub_reachable()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError("`mmad data fetch --source mmad-qa` needs huggingface_hub: pip install 'mmad[fetch]'") from None
    try:
        folder = Path(snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=IMAGE_PATTERNS))
    except Exception as exc:  # the hub client raises many unrelated types when offline
        raise DataError(f"cannot download the hub dataset {repo_id!r} ({type(exc).__name__}: {str(exc)[:160]})") from None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"the hub dataset {repo_id!r} holds no image files; download the images by hand and put "
                        f"them under the MMAD-QA root")
    for path in files:
        yield {"image": {"path": str(path)}, "relative_path": path.relative_to(folder).as_posix()}
