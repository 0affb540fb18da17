"""Score and reason extraction from a model's answer: the strict form first, then lenient ones.

A failure is never a number: `parse_answer` returns score None and the caller records
`parse_failed` with the raw text (the reference scripts' silent 0 corrupts every metric).

Decisions (README, "Parsing"):
  - `Anomaly Score: N` (the reference's form) first; then lenient forms: markdown bold,
    brackets, other case, `anomaly_score = N`, a `Score: N` label at the start of a line,
    `N/100`, and JSON (`{"anomaly_score": N}`).
  - A number is read whole: decimals are kept (62.5, where the reference's regex keeps 62), and
    scientific notation counts (`1e2` is 100).
  - A score on another scale (`7 out of 10`, `7/10`) is parse_failed, never read as 7 of 100;
    `N/100` and `N out of 100` are fine.
  - A range (`30-40`) keeps its first number, as the reference's regex does.
  - Outside 0-100 is parse_failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
STRICT = re.compile(r"Anomaly Score:\s*" + NUMBER)
LENIENT = (
    # **Anomaly Score:** 45, __Anomaly score__: [45], anomaly_score = 45, "Anomaly Score": 45
    re.compile(r"anomaly[ _-]?score[\s*_\"'`]*[:=][\s*_\"'`]*[\[(]?\s*" + NUMBER, re.IGNORECASE),
    # Score: 85 as a label at the start of a line (markdown allowed)
    re.compile(r"^[\s>*_#-]*score[\s*_]*[:=][\s*_]*[\[(]?\s*" + NUMBER, re.IGNORECASE | re.MULTILINE),
    # Anomaly Score 45/100, Score: 45 / 100
    re.compile(r"(?:anomaly[ _-]?)?score\b[^0-9\n]{0,12}" + NUMBER + r"\s*/\s*100\b", re.IGNORECASE),
)
SCALE = re.compile(r"\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
# The reason runs to the end, or to an "Anomaly Score" line when the reason comes first.
REASON = re.compile(r"reason(?:ing)?[\s*_]*:[\s*_]*(.+?)(?=\n[\s*_#>-]*anomaly[ _-]?score|\Z)", re.IGNORECASE | re.DOTALL)


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
    scale: str | None = None
    for pattern in (STRICT,) + LENIENT:
        match = pattern.search(text)
        if match:
            score = float(match.group(1))
            other = SCALE.match(text, match.end(1))
            if other and float(other.group(1)) != 100:
                scale = other.group(1)
            break
    if score is None:
        score = _from_json(text)
    reason_match = REASON.search(text)
    reason = reason_match.group(1).strip().strip('"*_ ').strip() if reason_match else _json_reason(text)
    if scale is not None:
        return ParsedAnswer(None, reason, f"score given on a 0-{scale} scale, not 0-100")
    if score is None:
        return ParsedAnswer(None, reason, "no anomaly score in the answer")
    if not 0 <= score <= 100:
        return ParsedAnswer(None, reason, f"score {score:g} is outside 0-100")
    return ParsedAnswer(score, reason or None)
