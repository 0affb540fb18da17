"""Score and reason extraction from a model's answer: the strict form first, then lenient ones.

A failure is never a number: `parse_answer` returns score None and the caller records
`parse_failed` with the raw text (the reference scripts' silent 0 corrupts every metric).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

NUMBER = r"(-?\d+(?:\.\d+)?)"
STRICT = re.compile(r"Anomaly Score:\s*" + NUMBER)
LENIENT = (
    # **Anomaly Score:** 45, __Anomaly score__: [45], anomaly_score = 45, "Anomaly Score": 45
    re.compile(r"anomaly[ _-]?score[\s*_\"'`]*[:=][\s*_\"'`]*[\[(]?\s*" + NUMBER, re.IGNORECASE),
    # Anomaly Score 45/100, Score: 45 / 100
    re.compile(r"(?:anomaly[ _-]?)?score\b[^0-9\n]{0,12}" + NUMBER + r"\s*/\s*100", re.IGNORECASE),
)
REASON = re.compile(r"reason(?:ing)?[\s*_]*:[\s*_]*(.+)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ParsedAnswer:
    score: float | None
    reason: str | None
    error: str | None = None  # why the score is missing

    @property
    def ok(self) -> bool:
        return self.score is not None


def _from_json(text: str) -> float | None:
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if re.fullmatch(r"anomaly[ _-]?score|score", str(key), re.IGNORECASE):
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def _json_reason(text: str) -> str | None:
    match = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        data = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        for key, value in data.items():
            if str(key).lower().startswith("reason"):
                return str(value)
    return None


def parse_answer(text: str | None) -> ParsedAnswer:
    """Extract `Anomaly Score: N` (0-100) and `Reason: ...` from an answer."""
    if not text or not text.strip():
        return ParsedAnswer(None, None, "empty answer")
    score: float | None = None
    match = STRICT.search(text)
    if match:
        score = float(match.group(1))
    else:
        for pattern in LENIENT:
            match = pattern.search(text)
            if match:
                score = float(match.group(1))
                break
        if score is None:
            score = _from_json(text)
    reason_match = REASON.search(text)
    reason = reason_match.group(1).strip().strip('"*_ ').strip() if reason_match else _json_reason(text)
    if score is None:
        return ParsedAnswer(None, reason, "no anomaly score in the answer")
    if not 0 <= score <= 100:
        return ParsedAnswer(None, reason, f"score {score:g} is outside 0-100")
    return ParsedAnswer(score, reason or None)
