"""The MMAD-QA prompt texts are data (`mmad/assets/qa/<name>.toml`); code fixes only their order.

The first message of an image (and every message in single-question mode) is laid out as
    k template images, the query image, then one text:
    [domain-knowledge sentence + the category's knowledge]   (with --domain-knowledge)
    [few-shot sentence]                                      (k > 0)
    query sentence
    question-list sentence
    the question with its options
In cumulative mode a later question is a message of its own holding only the question text.
Variables are `$name` (string.Template), checked when the file is loaded: a field that uses an
unknown variable, or a field that is missing, is one line naming the file.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.errors import ConfigError
from mmad.qa.data import Question

FIELDS = {"system": set(), "few_shot": {"k"}, "query": set(), "question_list": set(),
          "question": {"number", "question", "options"}, "option": {"letter", "text"},
          "domain_knowledge": set()}
DEFAULT_PROMPT = "mmad"


def packaged_prompts() -> Path:
    from mmad.config import asset
    return asset("qa")


def _variables(text: str, source: Path, field: str) -> set[str]:
    found = set()
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            raise ConfigError(f"{source}: field {field!r} has a stray '$'; write '$$' for a literal dollar")
        name = match.group("named") or match.group("braced")
        if name:
            found.add(name)
    return found


@dataclass(frozen=True)
class QAPrompt:
    name: str
    source: Path
    system: str
    few_shot: str
    query: str
    question_list: str
    question: str
    option: str
    domain_knowledge: str
    description: str = ""

    def question_text(self, question: Question) -> str:
        options = "".join(string.Template(self.option).substitute(letter=letter, text=text)
                          for letter, text in question.options)
        return string.Template(self.question).substitute(number=question.number, question=question.text,
                                                         options=options)

    def opening(self, shots: int, knowledge: str = "") -> str:
        """The text before the first question of an image (ends with a newline)."""
        lines = []
        if knowledge:
            lines += [self.domain_knowledge, knowledge]
        if shots:
            lines.append(string.Template(self.few_shot).substitute(k=shots))
        lines += [self.query, self.question_list]
        return "\n".join(lines) + "\n"


def load_qa_prompt(name_or_file: str | None = None) -> QAPrompt:
    """A packaged prompt by name, or a .toml file of the same fields."""
    choice = name_or_file or DEFAULT_PROMPT
    path = Path(choice)
    if path.suffix != ".toml" or not path.is_file():
        path = packaged_prompts() / f"{choice}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in packaged_prompts().glob("*.toml")))
        raise ConfigError(f"unknown QA prompt {choice!r}: no file {path}; available: {names}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for field, allowed in FIELDS.items():
        value = data.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}: field {field!r} is missing or empty")
        unknown = _variables(value, path, field) - allowed
        if unknown:
            raise ConfigError(f"{path}: field {field!r} uses unknown variable(s) {', '.join(sorted(unknown))}; "
                              f"available there: {', '.join(sorted(allowed)) or 'none'}")
    return QAPrompt(path.stem, path, *(data[field] for field in FIELDS), description=data.get("description", ""))
