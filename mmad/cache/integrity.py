"""A checksum sealed into every cached answer and checked on every read.

SQLite's own checks see damaged pages, not a changed byte inside a stored text: one digit turned
into another still reads as an answer, and would be served as the score. So each stored value
carries `sha256` of its cache key and its canonical JSON (the value without the checksum); a
value whose checksum does not match is a miss (the job is asked again, and the fresh answer
replaces it), `mmad cache check` counts it as damaged, and `mmad cache rebuild --from` takes the
record's answer instead of it.

Values written before checksums existed carry none: they are read as they are (`unsealed`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

CHECKSUM = "sha256"


def _digest(key: str, value: Mapping) -> str:
    body = {name: item for name, item in value.items() if name != CHECKSUM}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{key}\n{text}".encode()).hexdigest()


def sealed_text(key: str, value: Mapping) -> str:
    """The JSON stored for `value` under `key`, with its checksum."""
    return json.dumps({**{k: v for k, v in value.items() if k != CHECKSUM}, CHECKSUM: _digest(key, value)},
                      ensure_ascii=False, separators=(",", ":"))


def opened(key: str, value: object) -> dict | None:
    """The answer stored under `key` (checksum removed), or None when it is damaged: not an
    object, or a checksum that does not match. An unsealed value (older mmad) is returned as is."""
    if not isinstance(value, dict):
        return None
    stored = value.get(CHECKSUM)
    if stored is None:
        return value
    if stored != _digest(key, value):
        return None
    return {name: item for name, item in value.items() if name != CHECKSUM}


def is_damaged(key: str, value: object) -> bool:
    """True when `value` holds a checksum that does not match (or is no answer at all)."""
    return opened(key, value) is None
