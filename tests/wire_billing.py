"""What tests/wire_server.py bills: input tokens as the vendors document them, with their
prompt-cache fields, written independently of mmad.cost."""

from __future__ import annotations

import base64
import hashlib
import json
import math

import quicktok

TOKENIZER = quicktok.get_encoding("o200k_base")


class Billing:
    """Part of `WireServer` (a mixin): it uses the server's lock and prompt-cache memory."""

    def usage(self, received, anthropic: bool) -> dict:
        """Billed input tokens, as the vendors document them, with their prompt-cache fields.

        Written independently of mmad.cost: images by each vendor's formula from the decoded
        size; text with the o200k tokenizer for both (Anthropic's own tokenizer is not public, so
        an estimate by mmad's character rule will differ a little, as it would for real).
        """
        body = received.body
        first = body["messages"][0]
        system = (body.get("system") if anthropic else first["content"] if first.get("role") == "system" else "") or ""
        blocks = body["messages"][-1]["content"]
        tokens = [_text_tokens(system) + 9]
        marked = None
        for index, block in enumerate(blocks):
            if block.get("type") == "text":
                tokens.append(_text_tokens(block["text"]))
            else:
                data = block["source"]["data"] if anthropic else block["image_url"]["url"].split(",", 1)[1]
                size = decode_image(data).size
                detail = None if anthropic else block["image_url"].get("detail", "high")
                tokens.append(_claude_image(*size) if anthropic else _openai_image(*size, body["model"], detail))
            if block.get("cache_control"):
                marked = index + 1
        total = sum(tokens)
        if anthropic:
            if marked is None:
                return {"input_tokens": total}
            prefix = sum(tokens[:marked + 1])
            key = hashlib.sha256(json.dumps([system, blocks[:marked]], sort_keys=True).encode()).hexdigest()
            with self._lock:
                seen = key in self._prompt_cache
                self._prompt_cache.add(key)
            if prefix < 1024:
                return {"input_tokens": total}
            field = "cache_read_input_tokens" if seen else "cache_creation_input_tokens"
            return {"input_tokens": total - prefix, field: prefix}
        # OpenAI caches automatically: the longest seen prefix (everything before the query's label), in
        # 128-token steps from 1,024.
        prefix = sum(tokens[:-2])
        key = hashlib.sha256(json.dumps([body.get("prompt_cache_key"), system, blocks[:-2]], sort_keys=True)
                             .encode()).hexdigest()
        with self._lock:
            seen = key in self._prompt_cache
            self._prompt_cache.add(key)
        cached = 1024 + 128 * ((prefix - 1024) // 128) if seen and prefix >= 1024 else 0
        return {"prompt_tokens": total, "cached_tokens": cached}


def _text_tokens(text: str) -> int:
    return len(TOKENIZER.encode_ordinary(text))


def _openai_image(width: int, height: int, model: str, detail: str) -> int:
    """85 + 170 per 512-px tile after fitting 2048 and scaling the short side to 768."""
    base, tile = (2833, 5667) if model.startswith("gpt-4o-mini") else (85, 170)
    if detail == "low":
        return base
    if max(width, height) > 2048:
        width, height = width * 2048 / max(width, height), height * 2048 / max(width, height)
    if min(width, height) > 768:
        width, height = width * 768 / min(width, height), height * 768 / min(width, height)
    return base + tile * math.ceil(width / 512) * math.ceil(height / 512)


def _claude_image(width: int, height: int) -> int:
    """(width * height) / 750, after Anthropic's caps (long edge 1568, about 1,600 tokens)."""
    factor = min(1.0, 1568 / max(width, height), (1_200_000 / (width * height)) ** 0.5)
    return math.ceil(width * factor * height * factor / 750)


def decode_image(data: str):
    """A received base64 PNG as a PIL image (for assertions on what was sent)."""
    import io

    from PIL import Image
    return Image.open(io.BytesIO(base64.b64decode(data)))
