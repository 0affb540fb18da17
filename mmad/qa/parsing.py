"""The option letter of an answer, as the benchmark reads it, without ever inventing one.

  1. refusal words ('please', 'sorry', 'today', 'cannot assist', any case, anywhere): the answer
     is `refused` and the engine asks again (the reference re-asks such replies, at most 5 times);
  2. the last standalone capital letter A-E (regex `\\b([A-E])\\b`) that is one of the question's
     options; letters that are not options are ignored (the reference would score them as a
     wrong answer; here they are not an answer);
  3. else the option whose text is closest to the whole reply by difflib's ratio (what the
     reference's `get_close_matches` computes), both lower-cased with punctuation and extra
     spaces removed; it counts only at ratio >= 0.6 (difflib's own default cutoff; the reference
     uses 0, which matches any garbage) and only when no other option ties it;
  4. anything else is `parse_failed`: a failure that is counted, never a letter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher

REFUSAL_WORDS = ("please", "sorry", "today", "cannot assist")
LETTER = re.compile(r"\b([A-E])\b")
MIN_SIMILARITY = 0.6


@dataclass(frozen=True)
class Choice:
    """A parsed answer: `letter` set, or `refused`, or `error` saying why nothing was read."""

    letter: str | None = None
    how: str | None = None  # "letter" | "option text"
    similarity: float | None = None
    refused: bool = False
    error: str | None = None


def _normal(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def closest_option(text: str, options: Mapping[str, str]) -> tuple[str | None, float, str | None]:
    """(letter, ratio, problem): the option text nearest the reply, when near enough and unique."""
    reply = _normal(text)
    scored = sorted(((SequenceMatcher(None, reply, _normal(value)).ratio(), letter)
                     for letter, value in options.items()), reverse=True)
    best, letter = scored[0]
    if best < MIN_SIMILARITY:
        return None, best, f"no option letter, and no option text within similarity {MIN_SIMILARITY}"
    if len(scored) > 1 and scored[1][0] == best:
        return None, best, "no option letter, and the reply is equally close to two options"
    return letter, best, None


def parse_choice(text: str | None, options: Mapping[str, str]) -> Choice:
    """Read one reply to one question (see the module docstring for the rules and their order)."""
    if text is None or not text.strip():
        return Choice(error="empty answer")
    lowered = text.lower()
    words = [word for word in REFUSAL_WORDS if word in lowered]
    if words:
        return Choice(refused=True, error=f"refusal word(s) in the reply: {', '.join(words)}")
    letters = [letter for letter in LETTER.findall(text) if letter in options]
    if letters:
        return Choice(letters[-1], "letter")
    letter, ratio, problem = closest_option(text, options)
    if letter is None:
        return Choice(similarity=round(ratio, 4), error=problem)
    return Choice(letter, "option text", round(ratio, 4))
