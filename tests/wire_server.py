"""A local HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions and Anthropic messages
wire formats, with injected faults. The real SDKs talk to it; tests assert on what it received.

    server = WireServer().start()
    server.faults.extend([Fault("429", retry_after_ms=50), Fault("500")])   # next two requests
    ... OpenAI(base_url=server.openai_url) / Anthropic(base_url=server.anthropic_url) ...
    server.requests  # [(route, headers, body)] as received
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import quicktok

TOKENIZER = quicktok.get_encoding("o200k_base")


@dataclass
class Fault:
    """One injected outcome: ok (none), 429, 500, 529, hang, malformed, html, refusal, quota, bad_request,
    garbage, auth, not_found (the API's JSON 404, with `message` when given); html_404, html_501, html_405:
    that status with a multi-line HTML error page (a web server that is no API: a 404 page,
    `python -m http.server`'s 501 for POST), `message` (when given) inside the page."""

    kind: str
    retry_after_ms: int | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class Received:
    route: str
    headers: dict
    body: dict

    def images(self) -> list[str]:
        """Base64 payloads of the images in the user message, in order."""
        out = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if part.get("type") == "image_url":
                    out.append(part["image_url"]["url"].split(",", 1)[1])
                elif part.get("type") == "image":
                    out.append(part["source"]["data"])
        return out

    def texts(self) -> list[str]:
        out = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                out.extend(part["text"] for part in content if part.get("type") == "text")
        return out

    def query_id(self) -> str:
        images = self.images()
        return hashlib.sha256(images[-1].encode()).hexdigest() if images else ""


def default_answer(received: Received) -> str:
    """A deterministic score from the query image's bytes."""
    digest = int(received.query_id()[:8] or "0", 16)
    return f"Anomaly Score: {digest % 101}\nReason: synthetic answer for tests."


def severity_answer(received: Received) -> str:
    """A stand-in that looks: the share of the query's pixels outside the references' intensity
    range (a defect's shifted blotch and scratch) as a 0-100 score. The paper's prompt (a blank
    line before "Image 4:") gets it almost clean, any other prompt with heavy noise, so a prompt
    ablation on the demo data has an effect to find. Not a model; for demos and tests."""
    import numpy as np
    images = [np.asarray(decode_image(data).convert("L"), dtype=float) for data in received.images()]
    query = images[-1]
    pool = np.concatenate([image.ravel() for image in images[:-1]]) if len(images) > 1 else query.ravel()
    low, high = np.percentile(pool, [0.5, 99.5])
    signal = float(np.clip((np.mean((query < low) | (query > high)) - 0.008) * 1500, 0, 100))
    noise = int(received.query_id()[:6] or "0", 16) % 41 - 20
    paper = any("\n\nImage 4:" in text for text in received.texts())
    score = signal + noise * (0.2 if paper else 1.5)
    return f"Anomaly Score: {int(np.clip(round(score), 0, 100))}\nReason: {signal:.0f}% off-texture pixels (stand-in)."


CLASS_LINE = re.compile(r"^\s*(\d+)\.\s*([^:\n]+):", re.MULTILINE)


def classify_answer(received: Received) -> str:
    """An optional answer hook (`--answer classify`): a classification prompt (VELM's "Only return
    the class name.") gets a class name from the prompt's numbered list, chosen by a hash of all its
    images (so raw and conditioned requests differ); any other prompt gets `default_answer`."""
    text = "\n".join(received.texts())
    if "Only return the class name" not in text:
        return default_answer(received)
    names = [match.group(2).strip() for match in CLASS_LINE.finditer(text)]
    digest = int(hashlib.sha256("".join(received.images()).encode()).hexdigest()[:8], 16)
    return names[digest % len(names)] if names else "I cannot tell."


@dataclass
class WireServer:
    valid_keys: set | None = None  # None: any key is accepted
    latency: float = 0.0
    max_images: int | None = None
    answer: Callable[[Received], str] = default_answer
    limit_headers: dict = field(default_factory=dict)  # e.g. {"requests": 600, "tokens": 100000}
    enforce_rpm: float | None = None  # answer 429 past this many requests in any 60 s window
    bucket_rpm: float | None = None  # or: a token bucket refilled at this rate per minute ...
    bucket_burst_s: float = 2.0  # ... holding this many seconds of it (600/min, 2 s: 20 requests)
    fault_rule: Callable[[Received, int], Fault | None] | None = None
    # How /v1/messages/count_tokens answers: "count" (as Anthropic), or as a compatible server without
    # the endpoint: "html_404" (an HTML 404 page), "html_200" (a catch-all page), "message" (JSON without
    # input_tokens)
    count_tokens: str = "count"

    def __post_init__(self) -> None:
        self.faults: deque[Fault] = deque()
        self.requests: list[Received] = []
        self.paid: list[Received] = []  # requests answered 200 with an answer
        self._lock = threading.Lock()
        self._window: deque[float] = deque()
        self._bucket: tuple[float, float] | None = None  # (tokens, time)
        self.arrivals: list[float] = []  # time.monotonic() of every job request, as received
        self.rate_limited = 0
        self._prompt_cache: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls_until_done = 2  # a batch reports "in progress" for this many status reads
        self.batch_fail_ids: set[str] = set()  # custom_ids answered with an error
        self._httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> WireServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms delayed-ACK stall

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client went away mid-request (killed): nothing to answer
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path.rstrip("/").endswith("/files"):
                    return server._upload(self, headers, raw)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = {}
                if self.path.rstrip("/").endswith("/batches"):
                    return server._create_batch(self, Received(self.path, headers, body))
                server._handle(self, Received(self.path, headers, body))

            def do_GET(self) -> None:
                server._get(self, self.path.split("?")[0].rstrip("/"))

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a killed client resets: not news
                import sys
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self._httpd = Quiet(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ handling

    def _next_fault(self, received: Received, number: int) -> Fault | None:
        with self._lock:
            if self.faults:
                fault = self.faults.popleft()
                return None if fault.kind == "ok" else fault
        return self.fault_rule(received, number) if self.fault_rule else None

    def _over_bucket(self) -> float | None:
        rate = self.bucket_rpm / 60.0
        capacity = max(1.0, rate * self.bucket_burst_s)
        with self._lock:
            now = time.monotonic()
            tokens, then = self._bucket if self._bucket is not None else (capacity, now)
            tokens = min(capacity, tokens + (now - then) * rate)
            if tokens < 1.0:
                self._bucket = (tokens, now)
                return (1.0 - tokens) / rate
            self._bucket = (tokens - 1.0, now)
            return None

    def _over_rpm(self) -> float | None:
        if self.bucket_rpm:
            return self._over_bucket()
        if not self.enforce_rpm:
            return None
        with self._lock:
            now = time.monotonic()
            while self._window and now - self._window[0] >= 60.0:
                self._window.popleft()
            if len(self._window) >= self.enforce_rpm:
                return 60.0 - (now - self._window[0])
            self._window.append(now)
            return None

    def _handle(self, handler: BaseHTTPRequestHandler, received: Received) -> None:
        anthropic = received.route.rstrip("/").endswith("/messages")
        with self._lock:
            self.requests.append(received)
            number = len(self.requests)
        # Anthropic's SDK sends x-api-key (older) or a bearer token (current); OpenAI a bearer token.
        key = received.headers.get("x-api-key") or (received.headers.get("authorization") or "").removeprefix("Bearer ")
        if self.valid_keys is not None and key not in self.valid_keys:
            return self._error(handler, anthropic, 401, "authentication_error", "invalid x-api-key" if anthropic
                               else f"Incorrect API key provided: {key}.")
        if received.route.rstrip("/").endswith("/messages/count_tokens"):
            if self.count_tokens == "html_404":
                return self._send(handler, 404, html_error_page(404), {}, "text/html")
            if self.count_tokens == "html_200":
                return self._send(handler, 200, b"<html>\n<body>an app</body>\n</html>\n", {}, "text/html")
            if self.count_tokens == "message":
                return self._send(handler, 200, json.dumps({"id": "m", "type": "message", "content": []}).encode(), {})
            total = self.usage(received, True)["input_tokens"]
            return self._send(handler, 200, json.dumps({"input_tokens": total}).encode(), {})
        with self._lock:
            self.arrivals.append(time.monotonic())
        fault = self._next_fault(received, number)
        wait = self._over_rpm()
        if wait is not None and fault is None:
            fault = Fault("429", retry_after_ms=int(wait * 1000) + 1)
        if fault is not None and fault.kind == "429":
            with self._lock:
                self.rate_limited += 1
        if self.latency:
            time.sleep(self.latency)
        if fault is not None:
            if fault.kind == "hang":
                time.sleep(fault.seconds)
                return self._error(handler, anthropic, 504, "timeout", "hung")
            if fault.kind == "429":
                headers = {"retry-after-ms": str(fault.retry_after_ms)} if fault.retry_after_ms is not None else {}
                return self._error(handler, anthropic, 429, "rate_limit_error", "Rate limit reached", headers)
            if fault.kind in ("500", "529"):
                return self._error(handler, anthropic, int(fault.kind),
                                   "overloaded_error" if fault.kind == "529" else "api_error", "server trouble")
            if fault.kind == "quota":
                if anthropic:
                    return self._error(handler, True, 400, "invalid_request_error",
                                       "Your credit balance is too low to access the Anthropic API.")
                return self._error(handler, False, 429, "insufficient_quota",
                                   "You exceeded your current quota, please check your plan and billing details.")
            if fault.kind == "bad_request":
                return self._error(handler, anthropic, 400, "invalid_request_error", fault.message or "bad request")
            if fault.kind == "auth":
                return self._error(handler, anthropic, 401, "authentication_error", "invalid key")
            if fault.kind == "malformed":
                return self._send(handler, 200, b'{"id": "x", "choices": [', {})
            if fault.kind == "html":
                return self._send(handler, 200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", {},
                                  "text/html")
            if fault.kind == "not_found":
                return self._send(handler, 404, json.dumps({"error": {"message": fault.message or "Not Found",
                                                                      "type": "not_found"}}).encode(), {})
            if fault.kind in ("html_404", "html_405", "html_501"):
                return self._send(handler, int(fault.kind[-3:]), html_error_page(int(fault.kind[-3:]), fault.message),
                                  {}, "text/html;charset=utf-8")
        images = received.images()
        if self.max_images is not None and len(images) > self.max_images:
            return self._error(handler, anthropic, 400, "invalid_request_error",
                               f"At most {self.max_images} image(s) may be provided in one request.")
        refused = fault is not None and fault.kind == "refusal"
        text = "I'm sorry, I can't help with that." if refused else \
            ("I think it looks fine." if fault is not None and fault.kind == "garbage" else self.answer(received))
        with self._lock:
            if not refused:
                self.paid.append(received)
        usage = self.usage(received, anthropic)
        output_tokens = max(1, len(TOKENIZER.encode_ordinary(text)))
        model = received.body.get("model", "unknown")
        if anthropic:
            payload = {"id": f"msg_{number}", "type": "message", "role": "assistant", "model": model,
                       "content": [{"type": "text", "text": text}],
                       "stop_reason": "refusal" if refused else "end_turn", "stop_sequence": None,
                       "usage": dict(usage, output_tokens=output_tokens)}
        else:
            message = {"role": "assistant", "content": None if refused else text,
                       "refusal": text if refused else None}
            payload = {"id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
                       "model": model, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": output_tokens,
                                 "total_tokens": usage["prompt_tokens"] + output_tokens,
                                 "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]}}}
        self._send(handler, 200, json.dumps(payload).encode(), self._limit_headers(anthropic))

    # ------------------------------------------------------------------ batch APIs

    def _upload(self, handler, headers: dict, raw: bytes) -> None:
        """OpenAI POST /v1/files (multipart): keep the bytes, answer a FileObject."""
        from email.parser import BytesParser
        message = BytesParser().parsebytes(b"content-type: " + headers["content-type"].encode() + b"\r\n\r\n" + raw)
        content = b""
        for part in message.get_payload():
            if part.get_param("name", header="content-disposition") == "file":
                content = part.get_payload(decode=True)
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = content
        self._send(handler, 200, json.dumps({"id": file_id, "object": "file", "bytes": len(content),
                                             "created_at": int(time.time()), "filename": "batch.jsonl",
                                             "purpose": "batch", "status": "processed"}).encode(), {})

    def _answer_body(self, route: str, body: dict, number: int) -> tuple[int, dict]:
        """What one request of a batch gets: the same answer and usage as a live call."""
        received = Received(route, {}, body)
        anthropic = route.endswith("/messages")
        with self._lock:
            self.requests.append(received)
            self.paid.append(received)
        text = self.answer(received)
        usage = self.usage(received, anthropic)
        output_tokens = max(1, len(TOKENIZER.encode_ordinary(text)))
        if anthropic:
            return 200, {"id": f"msg_b{number}", "type": "message", "role": "assistant", "model": body["model"],
                         "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                         "stop_sequence": None, "usage": dict(usage, output_tokens=output_tokens)}
        return 200, {"id": f"chatcmpl-b{number}", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": output_tokens,
                               "total_tokens": usage["prompt_tokens"] + output_tokens,
                               "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]}}}

    def _create_batch(self, handler, received: Received) -> None:
        anthropic = received.route.rstrip("/").endswith("/messages/batches")
        with self._lock:
            batch_id = f"{'msgbatch' if anthropic else 'batch'}_{len(self.batches) + 1}"
        if anthropic:
            items = [(r["custom_id"], "/v1/messages", r["params"]) for r in received.body["requests"]]
        else:
            lines = self.files[received.body["input_file_id"]].decode().splitlines()
            items = [(d["custom_id"], d["url"], d["body"]) for d in map(json.loads, lines)]
        results = []
        for number, (custom_id, route, body) in enumerate(items):
            if custom_id in self.batch_fail_ids:
                results.append((custom_id, 400, {"error": {"type": "invalid_request_error", "message": "bad image"}}))
            else:
                results.append((custom_id, *self._answer_body(route, body, number)))
        batch = {"id": batch_id, "anthropic": anthropic, "results": results, "polls": 0, "count": len(items)}
        with self._lock:
            self.batches[batch_id] = batch
        self._send(handler, 200, json.dumps(self._batch_view(batch)).encode(), {})

    def _batch_view(self, batch: dict) -> dict:
        done = batch["polls"] >= self.batch_polls_until_done
        now = int(time.time())
        if batch["anthropic"]:
            return {"id": batch["id"], "type": "message_batch", "processing_status": "ended" if done else "in_progress",
                    "request_counts": {"processing": 0 if done else batch["count"],
                                       "succeeded": batch["count"] if done else 0,
                                       "errored": 0, "canceled": 0, "expired": 0},
                    "created_at": "2026-11-23T00:00:00Z", "expires_at": "2026-11-24T00:00:00Z",
                    "ended_at": "2026-11-23T00:01:00Z" if done else None, "cancel_initiated_at": None,
                    "archived_at": None,
                    "results_url": f"{self.anthropic_url}/v1/messages/batches/{batch['id']}/results" if done else None}
        view = {"id": batch["id"], "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": "x",
                "completion_window": "24h", "status": "completed" if done else "in_progress", "created_at": now}
        if done:
            view["output_file_id"] = f"{batch['id']}-output"
            view["error_file_id"] = f"{batch['id']}-errors"
        return view

    def stats(self) -> dict:
        with self._lock:
            # "paid": every answered request (what a vendor would bill)
            return {"requests": len(self.requests), "paid": len(self.paid), "rate_limited": self.rate_limited,
                    "arrivals": list(self.arrivals)}

    def _get(self, handler, path: str) -> None:
        if path == "/_stats":  # for benchmarks with the server in its own process
            return self._send(handler, 200, json.dumps(self.stats()).encode(), {})
        parts = path.split("/")
        if "batches" in parts and parts[-1] != "results":
            batch = self.batches[parts[-1]]
            with self._lock:
                batch["polls"] += 1
            return self._send(handler, 200, json.dumps(self._batch_view(batch)).encode(), {})
        if parts[-1] == "results":  # Anthropic results stream (JSONL)
            batch = self.batches[parts[-2]]
            lines = [{"custom_id": cid, "result": {"type": "succeeded", "message": body} if status == 200 else
                      {"type": "errored", "error": {"type": "error", "error": body["error"]}}}
                     for cid, status, body in batch["results"]]
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            return self._send(handler, 200, data, {}, "application/x-jsonl")
        if parts[-1] == "content":  # OpenAI output / error files
            batch_id, kind = parts[-2].rsplit("-", 1)
            batch = self.batches[batch_id]
            wanted = [r for r in batch["results"] if (r[1] == 200) == (kind == "output")]
            lines = [{"id": f"req_{i}", "custom_id": cid, "response": {"status_code": status, "body": body},
                      "error": None} for i, (cid, status, body) in enumerate(wanted)]
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            return self._send(handler, 200, data, {}, "application/octet-stream")
        self._send(handler, 404, b'{"error": {"message": "not found"}}', {})

    def usage(self, received: Received, anthropic: bool) -> dict:
        """Billed input tokens, as the vendors document them, with their prompt-cache fields.

        Written independently of mmad.cost: images by each vendor's formula from the decoded
        size; text with the o200k tokenizer for both (Anthropic's own tokenizer is not public, so
        an estimate by mmad's character rule will differ a little, as it would for real).
        """
        body = received.body
        system = body.get("system") if anthropic else body["messages"][0]["content"]
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

    def _limit_headers(self, anthropic: bool) -> dict:
        headers = {}
        for kind, limit in self.limit_headers.items():
            if anthropic:
                headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            else:
                headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        return headers

    def _error(self, handler, anthropic: bool, status: int, kind: str, message: str, headers: dict | None = None):
        if anthropic:
            payload = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            payload = {"error": {"message": message, "type": kind, "code": kind, "param": None}}
        self._send(handler, status, json.dumps(payload).encode(), headers or {})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict,
              content_type: str = "application/json") -> None:
        try:
            handler.send_response(status)
            handler.send_header("content-type", content_type)
            handler.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def html_error_page(status: int, message: str = "") -> bytes:
    """An error page as `python -m http.server` writes it: many lines of HTML."""
    from http import HTTPStatus
    phrase = HTTPStatus(status).phrase
    return (f"<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n"
            f"        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n"
            f"        <p>Error code: {status}</p>\n        <p>Message: {message or phrase}.</p>\n"
            f"        <p>Error code explanation: {status} - {phrase}.</p>\n    </body>\n</html>\n").encode()


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


if __name__ == "__main__":  # a standalone server, for benchmarks: python -m tests.wire_server
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--bucket-rpm", type=float, help="rate limit as a token bucket (requests/min)")
    parser.add_argument("--burst-seconds", type=float, default=2.0)
    parser.add_argument("--limit-header", type=int, help="announce this requests/min limit in the headers")
    parser.add_argument("--answer", choices=("score", "classify", "severity"), default="score",
                        help="classify: also answer classification prompts with a class name (classify_answer); "
                             "severity: scores that follow the images' defects (severity_answer)")
    args = parser.parse_args()
    standalone = WireServer(latency=args.latency, bucket_rpm=args.bucket_rpm, bucket_burst_s=args.burst_seconds,
                            limit_headers={"requests": args.limit_header} if args.limit_header else {},
                            answer={"classify": classify_answer, "severity": severity_answer}.get(
                                args.answer, default_answer)).start()
    print(standalone.port, flush=True)
    threading.Event().wait()
