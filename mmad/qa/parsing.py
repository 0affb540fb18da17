"""The option letter of an answer, as the benchmark reads it, without ever inventing one.

Both rules first look for refusal words ('please', 'sorry', 'today', 'cannot assist', any case,
anywhere): the answer is `refused` and the engine asks again (5 requests in all, as gpt4o.py).

`official` (default; MMAD's gpt4o.py): every standalone capital letter A-E (regex
`\\b([A-E])\\b`), the LAST one kept — also a letter that is not among the question's options
(it is then scored wrong, as the official script scores it). A reply without any such letter
makes gpt4o.py stop with an IndexError; here it is `parse_failed` (a counted failure, left out
of the accuracy like the script's failed requests), never a letter.

`mmad` (`--answer-parsing mmad`, stricter):
  1. the last standalone A-E letter that is one of the question's options; other letters are
     not an answer;
  2. else the option whose text is closest to the whole reply by difflib's ratio (what the Qwen
     and LLaVA scripts' `get_close_matches` computes), both lower-cased with punctuation and extra
     spaces removed; it counts only at ratio >= 0.6 (difflib's own default cutoff; those scripts
     use 0, which matches any garbage) and only when no other option ties it;
  3. anything else is `parse_failed`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher

REFUSAL_WORDS = ("please", "sorry", "today", "cannot assist")
LETTER = re.compile(r"\b([A-E])\b")
MIN_SIMILARITY = 0.6
RULES = ("official", "mmad")


@dataclass(frozen=True)
class Choice:
    """A parsed answer: `letter` set, or `refused`, or `error` saying why nothing was read."""

    letter: str | None = None
    how: str | None = None  # "letter" | "letter, not an option" | "option text"
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


def refusal(text: str) -> list[str]:
    lowered = text.lower()
    return [word for word in REFUSAL_WORDS if word in lowered]


def parse_choice(text: str | None, options: Mapping[str, str], rule: str = "official") -> Choice:
    """Read one reply to one question (see the module docstring for the rules and their order)."""
    if text is None or not text.strip():
        return Choice(error="empty answer")
    words = refusal(text)
    if words:
        return Choice(refused=True, error=f"refusal word(s) in the reply: {', '.join(words)}")
    letters = LETTER.findall(text)
    if rule == "official":
        if not letters:
            return Choice(error="no letter A-E in the reply (the official script stops with an IndexError here)")
        last = letters[-1]
        return Choice(last, "letter" if last in options else "letter, not an option")
    letters = [letter for letter in letters if letter in options]
    if letters:
        return Choice(letters[-1], "letter")
    letter, ratio, problem = closest_option(text, options)
    if letter is None:
        return Choice(similarity=round(ratio, 4), error=problem)
    return Choice(letter, "option text", round(ratio, 4))
