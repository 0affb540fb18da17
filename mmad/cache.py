"""Content-addressed store of paid responses (diskcache, SQLite underneath).

Key = sha256 of canonical JSON of exactly the inputs that change an answer:
  key version, provider identity (name, and base_url for custom servers), model, temperature,
  max_tokens, system text, and each part in order: text verbatim, images as
  {sha256 of the source file's bytes, preprocessing spec}.
Timeouts, concurrency and keys are not part of it. Value = JSON of the raw answer text, usage,
latency and finish reason. Errors and refusals are never stored. Parsing happens after the cache,
so a parser fix never costs money.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import diskcache

from mmad.images import ImageRef
from mmad.providers.base import Request

KEY_VERSION = 1


def _public_url(url: str) -> str:
    """A base URL without any user:password part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def key_material(identity: dict[str, str], request: Request) -> dict:
    ident = dict(identity)
    if "base_url" in ident:
        ident["base_url"] = _public_url(ident["base_url"])
    return {
        "key_version": KEY_VERSION,
        **ident,
        "model": request.model,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "system": request.system,
        "parts": [{"image": p.sha256, "spec": p.spec} if isinstance(p, ImageRef) else {"text": p}
                  for p in request.parts],
    }


def cache_key(identity: dict[str, str], request: Request) -> str:
    canonical = json.dumps(key_material(identity, request), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Paid answers by cache key, as JSON values."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._store = diskcache.Cache(str(directory / "responses"))

    def get(self, key: str) -> dict | None:
        value = self._store.get(key)
        return json.loads(value) if value is not None else None

    def put(self, key: str, value: dict) -> None:
        self._store.set(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def __contains__(self, key: str) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        self._store.close()
