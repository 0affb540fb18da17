"""A model's answer -> one class (its folder key; the model answers with display names).

`velm` (default; VELM's eval.py): the answer lower-cased, exactly `good` -> good, exactly a
display name of the category (lower-cased) -> that class, anything else -> `unknown`
("Unknown class" in VELM). No trimming: "Scratch." or "scratch\n" is unknown there too.

`mmad` (`--answer-mapping mmad`, lenient), on display names, rules in order (the first that
applies wins; `match` in the record says which):
  1. `exact`: the answer, cleaned (lower-cased; surrounding whitespace, quotes, backticks,
     asterisks, a trailing period and a leading "class:" / "anomaly class:" / "answer:" label
     removed; underscores, hyphens and spaces treated alike), equals a class name. The normal
     class `good` also answers to "normal" and "no anomaly".
  2. `number`: the cleaned answer is a number k (optionally "k." / "k)" / "class k") and
     1 <= k <= the number of classes: the k-th class of the numbered list in the prompt.
  3. `mention`: exactly one class name occurs in the answer as a whole word (same
     normalisation); two or more different ones -> not mapped (ambiguous).
  4. `close`: difflib's similarity ratio of the cleaned answer to a class name is >= 0.85 for
     exactly one best class (a misspelling such as "scrach").
  5. otherwise `unknown`: its own class "unknown"; the record keeps the raw text.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from mmad.classify.classes import NORMAL, UNKNOWN

LABEL = re.compile(r"^(?:the\s+)?(?:anomaly\s+class|class(?:\s+name)?|answer|prediction)\s*[:=-]\s*", re.IGNORECASE)
NUMBER = re.compile(r"^(?:class\s*)?(\d+)\s*[.)]?$", re.IGNORECASE)
NORMAL_WORDS = ("normal", "no anomaly", "none", "good")
CLOSE = 0.85


RULES = ("velm", "mmad")


@dataclass(frozen=True)
class Mapped:
    predicted: str
    match: str  # exact | number | mention | close | none
    answer: str  # the cleaned answer


def map_to_key(text: str | None, keys: tuple[str, ...], displays: tuple[str, ...], rule: str = "velm") -> Mapped:
    """The folder key an answer names under `rule` (see the module docstring)."""
    if rule == "velm":
        answer = (text or "").lower()
        if answer == NORMAL:
            return Mapped(NORMAL, "exact", text or "")
        by_display = {display.lower(): key for key, display in zip(keys, displays)}
        if answer in by_display:
            return Mapped(by_display[answer], "exact", text or "")
        return Mapped(UNKNOWN, "none", text or "")
    mapped = map_answer(text, displays)
    back = dict(zip(displays, keys))
    return Mapped(back.get(mapped.predicted, mapped.predicted), mapped.match, mapped.answer)


def _norm(text: str) -> str:
    return re.sub(r"[\s_-]+", " ", text.lower()).strip()


def clean(text: str) -> str:
    text = text.strip().strip("`*\"' \n\t")
    text = LABEL.sub("", text).strip().strip("`*\"' ")
    return text[:-1].strip() if text.endswith(".") else text


def map_answer(text: str | None, classes: tuple[str, ...]) -> Mapped:
    """The class an answer names (see the module docstring)."""
    cleaned = clean(text or "")
    key = _norm(cleaned)
    names = {_norm(name): name for name in classes}
    if key in names:
        return Mapped(names[key], "exact", cleaned)
    if key in NORMAL_WORDS:
        return Mapped(NORMAL, "exact", cleaned)
    number = NUMBER.match(key)
    if number and 1 <= int(number.group(1)) <= len(classes):
        return Mapped(classes[int(number.group(1)) - 1], "number", cleaned)
    padded = f" {re.sub(r'[^a-z0-9]+', ' ', key)} "
    mentioned = {name for norm, name in names.items() if f" {re.sub(r'[^a-z0-9]+', ' ', norm)} " in padded}
    if len(mentioned) == 1:
        return Mapped(mentioned.pop(), "mention", cleaned)
    if not mentioned and key:
        ratios = sorted(((difflib.SequenceMatcher(None, key, norm).ratio(), name) for norm, name in names.items()),
                        reverse=True)
        if ratios and ratios[0][0] >= CLOSE and (len(ratios) == 1 or ratios[1][0] < ratios[0][0]):
            return Mapped(ratios[0][1], "close", cleaned)
    return Mapped(UNKNOWN, "none", cleaned)
