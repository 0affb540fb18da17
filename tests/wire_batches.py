"""The batch APIs of tests/wire_server.py: OpenAI's files and batches, Anthropic's message
batches. Each request of a batch gets what a live call would; a batch reports "in progress" for
`batch_polls_until_done` status reads, then ended."""

from __future__ import annotations

import json
import time


class BatchEndpoints:
    """Part of `WireServer` (a mixin): it uses the server's lock, answer, usage and _send."""


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
        from tests.wire_server import TOKENIZER, Received
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

    def _create_batch(self, handler, received) -> None:
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

    def _batch_get(self, handler, path: str) -> bool:
        """Answer a GET of the batch APIs; False when `path` is none of theirs."""
        parts = path.split("/")
        if "batches" in parts and parts[-1] != "results":
            batch = self.batches[parts[-1]]
            with self._lock:
                batch["polls"] += 1
            self._send(handler, 200, json.dumps(self._batch_view(batch)).encode(), {})
            return True
        if parts[-1] == "results":  # Anthropic results stream (JSONL)
            batch = self.batches[parts[-2]]
            lines = [{"custom_id": cid, "result": {"type": "succeeded", "message": body} if status == 200 else
                      {"type": "errored", "error": {"type": "error", "error": body["error"]}}}
                     for cid, status, body in batch["results"]]
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            self._send(handler, 200, data, {}, "application/x-jsonl")
            return True
        if parts[-1] == "content":  # OpenAI output / error files
            batch_id, kind = parts[-2].rsplit("-", 1)
            batch = self.batches[batch_id]
            wanted = [r for r in batch["results"] if (r[1] == 200) == (kind == "output")]
            lines = [{"id": f"req_{i}", "custom_id": cid, "response": {"status_code": status, "body": body},
                      "error": None} for i, (cid, status, body) in enumerate(wanted)]
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            self._send(handler, 200, data, {}, "application/octet-stream")
            return True
        return False
